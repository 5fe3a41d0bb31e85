#!/bin/sh
# build-deb.sh [OUTDIR] - builds the Debian package walmirror_VERSION_ARCH.deb from this tree
# with Debian's own tooling, and leaves it in OUTDIR (default: build-deb/ in the tree).
#
# The packaging lives in conf/debian/ (the repository keeps no top-level debian/): this script
# copies the tree into a temporary directory, puts conf/debian/ at its root as debian/, and
# runs `dpkg-buildpackage -us -uc -b` there: debhelper (dh) with CMake, dh_shlibdeps for the
# library dependencies, no tests (tests/run.sh runs those).  It compiles only the two programs,
# with $(nproc) jobs (WALMIRROR_DEB_JOBS sets another number).
#   sh tools/build-deb.sh                  (needs tools/install-deps.sh's packages)
#   WALMIRROR_DEB_KEEP=1 sh tools/build-deb.sh   (keeps the temporary tree, and says where)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/build-deb}
jobs=${WALMIRROR_DEB_JOBS:-$(nproc)}

# The package's version is the project's: conf/debian/changelog's newest entry must name the
# version of CMakeLists.txt's project().
version=$(sed -n 's/^project(walmirror VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
deb_version=$(sed -n '1s/^walmirror (\([^)]*\)).*/\1/p' "$src/conf/debian/changelog")
if [ -z "$version" ] || [ "$version" != "$deb_version" ]; then
    echo "build-deb: CMakeLists.txt says version '$version' but conf/debian/changelog's newest entry '$deb_version': add a changelog entry for $version" >&2
    exit 1
fi
for tool in dpkg-buildpackage dh dh_shlibdeps; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-deb: $tool is missing (dpkg-dev, debhelper: tools/install-deps.sh installs them)" >&2
        exit 1
    fi
done

stage=$(mktemp -d "${TMPDIR:-/tmp}/walmirror-deb-XXXXXX")
cleanup() {
    if [ "${WALMIRROR_DEB_KEEP:-0}" = 1 ]; then echo "build-deb: kept $stage"; else rm -rf "$stage"; fi
}
trap cleanup EXIT INT TERM
tree=$stage/walmirror-$version
mkdir -p "$tree"
# The repository's fixed layout, without build trees or fuzzing artifacts.
tar -C "$src" --exclude='./tests/fuzz/artifacts' -cf - \
    ./CMakeLists.txt ./README.md ./agent ./wire ./tools ./conf ./bench ./tests ./docs | tar -C "$tree" -xf -
cp -a "$src/conf/debian" "$tree/debian"

echo "build-deb: dpkg-buildpackage -us -uc -b in $tree (parallel=$jobs)"
(cd "$tree" && DEB_BUILD_OPTIONS="nocheck parallel=$jobs" dpkg-buildpackage -us -uc -b) \
    >"$stage/build.log" 2>&1 || {
    tail -n 60 "$stage/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (the end of its log is above)" >&2
    exit 1
}
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=walmirror_${version}_${arch}.deb
mkdir -p "$out"
cp "$stage/$deb" "$out/$deb"
echo "build-deb: $out/$deb"
