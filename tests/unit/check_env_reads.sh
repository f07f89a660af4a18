#!/bin/sh
# Every DCOMM_* variable is read by the config table (core/config.c) and by no
# other C source: a setting read anywhere else is one that dcomm-info cannot
# list. Layers below core get their values from core at init; programs above
# it link the table (dcomm_config). Fails, naming file:line, on
#   1. getenv("DCOMM_...") or secure_getenv("DCOMM_...") outside core/config.c;
#   2. getenv(NAME) where NAME is a macro defined as a "DCOMM_..." string;
#   3. getenv(expression) in a file that also holds a DCOMM_* name as a string
#      of its own ("DCOMM_X", the prefix "DCOMM_" or a format "DCOMM_%s")
#      anywhere but as the first argument of setenv, unsetenv or dc_config_*():
#      the name may reach getenv through the variable.
# Tests, scripts and the Python package are out of its scope (Python may read
# its own environment).
#   check_env_reads.sh SOURCE_DIR     scan the tree
#   check_env_reads.sh --self-test    check that each rule fires (a tree of its own)
set -u

dirs="core collectives transports modules kernels util launcher trainer bench plugins include
examples"
allowed=core/config.c
sp='[[:space:]]'
ident='[A-Za-z_][A-Za-z0-9_]*'
define_re="^$sp*#$sp*define$sp+"
getenv_re="(^|[^A-Za-z0-9_])(secure_)?getenv$sp*\\("
# A string literal that is a DCOMM_* name, the bare prefix or a format making one.
name_re='"DCOMM_[A-Z0-9_]*(%[^"]*)?"'

# Sources in scope, relative to the tree, the config table left out.
sources()
{
    for d in $dirs; do
        [ -d "$d" ] && find "$d" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' \
            -o -name '*.cuh' -o -name '*.cc' -o -name '*.cpp' \)
    done | grep -vx "$allowed" | sort
}

# NAME for every '#define NAME "DCOMM_..."' in the sources.
dcomm_macros()
{
    xargs -r grep -hE "$define_re$ident$sp+\"DCOMM_" <"$tmp/files" |
        sed -E "s/$define_re($ident).*/\\1/" | sort -u
}

# 0 when the argument of the (last) getenv call on this line is a macro defined
# as a string: rule 2 judges those.
string_macro()
{
    arg=$(printf '%s\n' "$1" | sed -nE "s/.*getenv$sp*\\($sp*($ident)$sp*\\).*/\\1/p")
    [ -n "$arg" ] && xargs -r grep -qE "$define_re$arg$sp+\"" <"$tmp/files"
}

scan()
{
    bad=0
    sources >"$tmp/files"
    # 1: a DCOMM_* literal straight into getenv.
    xargs -r grep -nHE "$getenv_re$sp*\"DCOMM_" <"$tmp/files" >"$tmp/hits"
    while IFS= read -r hit; do
        echo "$(printf '%s' "$hit" | cut -d: -f1,2): getenv of a DCOMM_* variable outside $allowed"
        bad=1
    done <"$tmp/hits"
    # 2: through a macro.
    for m in $(dcomm_macros); do
        xargs -r grep -nHE "$getenv_re$sp*$m$sp*\\)" <"$tmp/files" >"$tmp/hits"
        while IFS= read -r hit; do
            echo "$(printf '%s' "$hit" | cut -d: -f1,2): getenv($m), a DCOMM_* name," \
                 "outside $allowed"
            bad=1
        done <"$tmp/hits"
    done
    # 3: through a variable, in a file that names DCOMM_* variables.
    for f in $(cat "$tmp/files"); do
        grep -nE "$getenv_re$sp*(\$|[^\"[:space:]])" "$f" >"$tmp/calls" || continue
        indirect=""
        while IFS= read -r call; do
            string_macro "$call" || indirect=${indirect:-$(printf '%s' "$call" | cut -d: -f1)}
        done <"$tmp/calls"
        [ -n "$indirect" ] || continue
        sed -E "s/(setenv|unsetenv|dc_config_[a-z_]+)$sp*\\($sp*\"DCOMM_[A-Z0-9_]*\"//g" "$f" |
            grep -nE "$name_re" >"$tmp/names" || continue
        while IFS= read -r hit; do
            echo "$f:${hit%%:*}: a DCOMM_* name in a file whose getenv (line $indirect) takes" \
                 "a variable: read it through $allowed"
            bad=1
        done <"$tmp/names"
    done
    return $bad
}

self_test()
{
    root=$tmp/tree
    mkdir -p "$root/core" "$root/launcher"
    cat >"$root/core/config.c" <<'EOF'
static const char *f(void) { return getenv("DCOMM_ALLOWED"); }
EOF
    cat >"$root/core/good.c" <<'EOF'
#define RSH_ENV "DLAUNCH_RSH"
static int f(const char *name) { return getenv("HOME") != NULL && getenv(RSH_ENV) != NULL &&
    getenv(name) != NULL && dc_config_source("DCOMM_RANK") != NULL; }
static void g(void) { setenv("DCOMM_IFNAME", "eth0", 1); puts("set DCOMM_X=1 to ..."); }
EOF
    cat >"$root/launcher/literal.c" <<'EOF'
static const char *a(void) { return secure_getenv("DCOMM_ONE"); }
EOF
    cat >"$root/launcher/macro.c" <<'EOF'
#define ENV_NAME "DCOMM_TWO"
static const char *b(void) { return getenv( ENV_NAME ); }
EOF
    cat >"$root/launcher/variable.c" <<'EOF'
static const char *c(const char *n) { return getenv(n); }
static const char *d(void) { return c("DCOMM_THREE"); }
EOF
    (cd "$root" && scan) >"$tmp/out"
    rc=$?
    want="launcher/literal.c:1: launcher/macro.c:2: launcher/variable.c:2:"
    got=$(cut -d' ' -f1 "$tmp/out" | sort | tr '\n' ' ' | sed 's/ $//')
    if [ $rc -eq 0 ] || [ "$got" != "$want" ]; then
        echo "check_env_reads self-test: flagged '$got', expected '$want' (rc $rc):"
        cat "$tmp/out"
        return 1
    fi
    echo "check_env_reads self-test: each rule fires, and only there"
}

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
case ${1:-} in
--self-test) self_test ;;
'') echo "usage: check_env_reads.sh SOURCE_DIR | --self-test" >&2; exit 2 ;;
*)
    cd "$1" || exit 2
    if scan; then
        echo "check_env_reads: no DCOMM_* variable is read outside $allowed"
    else
        echo "check_env_reads: make each a row of the config table ($allowed) and read" \
             "dc_config (below core: have core pass the value down at init)"
        exit 1
    fi
    ;;
esac
