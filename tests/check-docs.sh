#!/bin/sh
# check-docs.sh SRC BUILD - the documentation names exactly what the programs accept:
#   - the configuration keys: the parser's key table (agent/config.c), each key confirmed by
#     the built walmirror-agent (a file setting it is not refused as an unknown key), against
#     the KEYS section of docs/man/walmirror.conf.5 and the key table of docs/configuration.md;
#   - the commands and options of `walmirrorctl --help` and `walmirror-agent --help` against
#     the SYNOPSIS, OPTIONS and COMMANDS sections of docs/man/walmirrorctl.1 and
#     docs/man/walmirror-agent.8;
#   - the three man pages format without a groff warning.
# A key, command or option added to a program fails this test until both the man page and
# (for a key) docs/configuration.md describe it; one removed fails it until they drop it.
# Exit status 0 when everything matches, 1 with one line per difference.
set -eu
src=$1
build=$2
agent=$build/agent/walmirror-agent
ctl=$build/tools/walmirrorctl
man=$src/docs/man
tmp=$(mktemp -d /tmp/wm-check-docs-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
status=0
bad() {
    echo "check-docs: $*" >&2
    status=1
}

# same WHAT LIST_A NAME_A LIST_B NAME_B: every line of one list is in the other.
same() {
    for x in $(comm -23 "$2" "$4"); do bad "$1 \"$x\" is in $3 but not in $5"; done
    for x in $(comm -13 "$2" "$4"); do bad "$1 \"$x\" is in $5 but not in $3"; done
}

# --- configuration keys ---------------------------------------------------------------------
# The parser's table: `[K_NAME] = {"name", roles, required},` entries between `keys[K_COUNT] = {`
# and `};`, read as one line so that an entry wrapped over two lines counts too.
awk '/keys\[K_COUNT\] = \{/ { t = 1 } t { print } t && /^};/ { exit }' "$src/agent/config.c" |
    tr '\n' ' ' | grep -oE '\[K_[A-Z0-9_]+\][[:space:]]*=[[:space:]]*\{[[:space:]]*"[a-z0-9_]+"' |
    sed 's/.*"\(.*\)"/\1/' | sort >"$tmp/keys.parser"
# As many entries as the enum has keys before K_COUNT: a table this script cannot read fails
# here rather than passing with a short list.
enum=$(awk '/^enum key_id \{/ { e = 1; next } e && /K_COUNT/ { exit } e && /^[[:space:]]*K_[A-Z0-9_]+,/ { n++ } END { print n + 0 }' \
    "$src/agent/config.c")
nkeys=$(wc -l <"$tmp/keys.parser")
if [ "$nkeys" -eq 0 ] || [ "$nkeys" -ne "$enum" ]; then
    bad "read $nkeys keys from agent/config.c's table but its enum key_id has $enum: update this script's reading of the table"
fi
# The built parser accepts each of them as a key, and refuses a key that is not one.
probe() {
    printf '%s = x\n' "$1" >"$tmp/probe.conf"
    "$agent" -c "$tmp/probe.conf" --check-config >/dev/null 2>"$tmp/probe.err" || true
    cat "$tmp/probe.err"
}
probe no_such_key_for_check_docs | grep -q 'unknown key' ||
    bad "walmirror-agent did not refuse an unknown key; the probe below proves nothing"
for k in $(cat "$tmp/keys.parser"); do
    if probe "$k" | grep -q 'unknown key'; then
        bad "key \"$k\" is in agent/config.c's table but walmirror-agent refuses it as unknown"
    fi
done
# walmirror.conf(5): the ".TP" / ".B key" entries of its KEYS section.
awk '/^\.SH KEYS/ { k = 1; next } /^\.SH/ { k = 0 } k && prev == ".TP" && /^\.B / { print $2 } { prev = $0 }' \
    "$man/walmirror.conf.5" | sed 's/\\-/-/g' | sort >"$tmp/keys.man"
# docs/configuration.md: the rows of the table under "## Keys".
awk '/^## Keys/ { k = 1; next } /^## / { k = 0 } k' "$src/docs/configuration.md" |
    grep -oE '^\| `[a-z0-9_]+` \|' | sed 's/^| `\(.*\)` |$/\1/' | sort >"$tmp/keys.md"
same key "$tmp/keys.parser" "the parser (agent/config.c)" "$tmp/keys.man" "docs/man/walmirror.conf.5"
same key "$tmp/keys.parser" "the parser (agent/config.c)" "$tmp/keys.md" "docs/configuration.md"

# --- commands and options -------------------------------------------------------------------
# words: options (-x, --name) among the words of the text on stdin.
words() { tr -cs 'A-Za-z0-9-' '\n' | grep -E '^--?[A-Za-z][A-Za-z0-9-]*$' | sort -u; }
# help_commands: the usage's command lines, indented by two blanks: "status [--json]...",
# "maintenance add (...", "init-standby ..."; a second word is part of the command when one
# blank separates it and it is a lower-case word.
help_commands() {
    grep -E '^  [a-z]' | sed -E 's/^  ([a-z][a-z-]*)( ([a-z]+)( |$))?.*/\1 \3/; s/ $//' | sort -u
}
# man_sections PAGE SECTION...: the page's text in those sections, fonts and \- undone.
man_sections() {
    page=$1
    shift
    awk -v want=" $* " '/^\.SH/ { name = $2; for (i = 3; i <= NF; i++) name = name " " $i; k = index(want, " " name " ") > 0; next } k' \
        "$page" | sed 's/\\-/-/g; s/\\f[BIRP]//g; s/\\e/\\/g'
}
# man_commands PAGE: the top-level ".TP" entries of COMMANDS (not those nested in .RS/.RE).
man_commands() {
    awk '/^\.SH COMMANDS/ { k = 1; next } /^\.SH/ { k = 0 } !k { next }
         /^\.RS/ { d++ } /^\.RE/ { d-- } d == 0 && prev == ".TP" { print } { prev = $0 }' "$1" |
        sed 's/\\-/-/g; s/\\f[BIRP]//g; s/^\.BI* //; s/"//g' |
        sed -E 's/^([a-z][a-z-]*)( ([a-z]+)( |$))?.*/\1 \3/; s/ $//' | sort -u
}
check_program() { # PROGRAM PAGE
    name=$(basename "$1")
    "$1" --help >"$tmp/$name.help" || bad "$name --help failed"
    words <"$tmp/$name.help" >"$tmp/$name.opts.help"
    help_commands <"$tmp/$name.help" >"$tmp/$name.cmds.help"
    man_sections "$2" SYNOPSIS OPTIONS COMMANDS | words >"$tmp/$name.opts.man"
    man_commands "$2" >"$tmp/$name.cmds.man"
    [ -s "$tmp/$name.opts.help" ] || bad "no option read from $name --help"
    same "$name option" "$tmp/$name.opts.help" "$name --help" "$tmp/$name.opts.man" "docs/man/$(basename "$2")"
    same "$name command" "$tmp/$name.cmds.help" "$name --help" "$tmp/$name.cmds.man" "docs/man/$(basename "$2")"
}
check_program "$ctl" "$man/walmirrorctl.1"
check_program "$agent" "$man/walmirror-agent.8"

# --- formatting -----------------------------------------------------------------------------
for page in "$man/walmirrorctl.1" "$man/walmirror.conf.5" "$man/walmirror-agent.8"; do
    LC_ALL=C.UTF-8 groff -t -man -ww -z "$page" >"$tmp/groff.out" 2>&1 || bad "groff failed on $page"
    [ -s "$tmp/groff.out" ] && bad "groff warns on $page: $(head -3 "$tmp/groff.out")"
done

if [ "$status" = 0 ]; then
    echo "check-docs: $nkeys keys, $(wc -l <"$tmp/walmirrorctl.cmds.help") + $(wc -l <"$tmp/walmirror-agent.cmds.help") commands, $(cat "$tmp"/*.opts.help | wc -l) options: documented"
fi
exit "$status"
