#!/usr/bin/env bash
# template-check.sh: do what a third-party driver author does with
# examples/driver-template, and fail loudly if any step breaks:
#   1. copy the template to a temp dir and rename it (module path, package,
#      driver name, binary) to $TEMPLATE_CHECK_NAME (default: mytest);
#   2. point its replace at this checkout and run its own tests (vet, and
#      go test -race: the conformance suite in process and through the plugin
#      protocol in process (sdktest), with its leak probe);
#   3. build pocketci-driver-<name>, install it into a temp plugin dir with a
#      SHA256SUMS file;
#   4. run bin/orchestra conformance --plugin <path> (through the plugin
#      protocol), and check that bin/orchestra plugins --plugin-dir <dir>
#      lists it as ok.
# Needs root (the template's tasks run in Linux namespaces) and bin/orchestra
# (make build).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=${TEMPLATE_CHECK_NAME:-mytest}
orchestra=$repo/bin/orchestra
template=$repo/examples/driver-template

say() { printf '== template-check: %s\n' "$*" >&2; }
die() { printf 'template-check: FAIL: %s\n' "$*" >&2; exit 1; }

[[ $name =~ ^[a-z][a-z0-9]*$ ]] || die "TEMPLATE_CHECK_NAME=$name: want [a-z][a-z0-9]* (a Go package name and a plugin name)"
[[ -x $orchestra ]] || die "$orchestra is missing or not executable: run 'make build' first"
[[ -f $template/go.mod ]] || die "no template at $template"
command -v go >/dev/null || die "go is not on PATH"

work=$(mktemp -d "${TMPDIR:-/tmp}/template-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/src
plugins=$work/plugins
# The renamed driver keeps its tasks and volumes under $<NAME>_ROOT.
root_var=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')_ROOT
export "$root_var=$work/root"
export GOWORK=off

say "copy $template to $src as driver '$name'"
cp -R "$template" "$src"
rm -f "$src"/pocketci-driver-* # a binary someone built in the template
mv "$src/cmd/pocketci-driver-mydriver" "$src/cmd/pocketci-driver-$name"
upper=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
grep -rlI -e mydriver -e MYDRIVER "$src" | while IFS= read -r f; do
	sed -i -e "s/mydriver/$name/g" -e "s/MYDRIVER/$upper/g" "$f"
done
if left=$(grep -rnI -i mydriver "$src"); then
	die "the rename left 'mydriver' behind:"$'\n'"$left"
fi
(cd "$src" && go mod edit -replace "github.com/jtarchie/pocketci=$repo")
grep -q "module example.com/$name" "$src/go.mod" || die "module path was not renamed in $src/go.mod"

say "go vet and go test -race in the renamed copy"
(cd "$src" && go vet ./... && go test -race -count=1 ./...) || die "the renamed template's own tests failed"

say "build pocketci-driver-$name and install it into $plugins"
mkdir -m 0700 "$plugins"
(cd "$src" && go build -o "$plugins/pocketci-driver-$name" "./cmd/pocketci-driver-$name") || die "build of the plugin failed"
(cd "$plugins" && sha256sum pocketci-driver-* > SHA256SUMS)

say "$orchestra conformance --plugin $plugins/pocketci-driver-$name"
"$orchestra" conformance --plugin "$plugins/pocketci-driver-$name" || die "conformance through the plugin protocol failed"

say "$orchestra plugins --plugin-dir $plugins"
listing=$("$orchestra" plugins --plugin-dir "$plugins") || die "orchestra plugins failed"
printf '%s\n' "$listing" >&2
# Columns are found by their header (NAME, STATE, PATH), not by position.
awk -v n="$name" -v p="$plugins/pocketci-driver-$name" '
	NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
	$col["NAME"] == n && $col["STATE"] == "ok" && $NF == p { found = 1 }
	END { exit !found }' <<<"$listing" ||
	die "orchestra plugins does not list '$name' as ok at $plugins/pocketci-driver-$name"

if [[ -d $work/root ]] && [[ -n $(ls -A "$work/root") ]]; then
	die "the driver left namespaces behind in \$$root_var: $(ls -A "$work/root")"
fi
say "PASS: the template, renamed to '$name', builds, passes conformance in process and as a plugin, and is listed"
