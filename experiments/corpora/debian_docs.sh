#!/usr/bin/env bash
# Lays out an English prose corpus from Debian 12's documentation packages,
# for the ALBERT ablation runs (README.md beside this script):
#
#   experiments/corpora/debian_docs.sh OUTPUT_DIR
#
# writes OUTPUT_DIR/{linux,python,perl,git,nodejs,cmake,sphinx}/**/*.txt, one
# document a file, read as
#   text:OUTPUT_DIR/**/*.txt with data.text_format=document, data.drop_markup=true.
# Needs apt-get download (Debian's package archive) and dpkg-deb; no root.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUTPUT_DIR" >&2
  exit 2
fi
output=$1
if [[ -e $output && -n $(ls -A "$output") ]]; then
  echo "$output exists and is not empty: give a new directory" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

packages=(linux-doc-6.1 python3.11-doc perl-doc git-doc nodejs-doc cmake-doc sphinx-doc)
(cd "$work" && apt-get download "${packages[@]}")
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$work/root"
done

# copy SOURCE_DIR NAME_SUFFIX DEST_DIR: every file under SOURCE_DIR named
# *NAME_SUFFIX, decompressed when .gz, to DEST_DIR/<relative path>.txt.
copy() {
  local source=$1 suffix=$2 dest=$3 file relative target
  while IFS= read -r -d '' file; do
    relative=${file#"$source"/}
    target=$dest/${relative%.gz}
    target=${target%.txt}.txt
    mkdir -p "$(dirname "$target")"
    if [[ $file == *.gz ]]; then
      gzip -dc "$file" >"$target"
    else
      cp "$file" "$target"
    fi
  done < <(find "$source" -type f -name "*$suffix" -print0)
}

# The kernel's reStructuredText, without its translations (not English).
docs=$work/root/usr/share/doc
copy "$docs/linux-doc-6.1/Documentation" .rst.gz "$output/linux"
rm -rf "$output/linux/translations"
# Python's documentation sources (reStructuredText, as .txt).
copy "$docs/python3.11/html/_sources" .txt "$output/python"
# Perl's manual pages (POD).
copy "$work/root/usr/share/perl" .pod "$output/perl"
# Git's manual pages and guides (AsciiDoc).
copy "$docs/git-doc" .txt "$output/git"
# Node.js's API reference (Markdown).
copy "$docs/nodejs/api" .md.gz "$output/nodejs"
# CMake's and Sphinx's documentation sources (reStructuredText).
copy "$docs/cmake-data/html/_sources" .txt "$output/cmake"
copy "$docs/sphinx-doc/html/_sources" .txt "$output/sphinx"

echo "$output: $(find "$output" -name '*.txt' | wc -l) files, $(find "$output" -name "*.txt" -exec cat {} + | wc -w) words before the markup filter"
