# yaml_str, shared by lib.sh (the sweeps) and gpu_acceptance.sh: a value from the user, made safe for --set.

yaml_str() {  # WHAT VALUE: VALUE as a YAML scalar that reads back as exactly VALUE, for --set KEY=VALUE
    # acl reads a --set value as YAML: a plain "data #2" is cut at " #" (a comment), and a value can turn into a
    # number, a boolean, null, a list or a mapping by its look. Within single quotes only ' is special (doubled).
    # A path of letters, digits and _ . / + - with a / in it is always a plain string, so it stays as typed.
    case $2 in
        *$'\n'*|*$'\r'*)  # YAML folds a line break into a space: the job would read another path
            echo "error: $1 holds a line break, which a --set value cannot carry; use another path" >&2
            return 2;;
        */*) [[ $2 == *[!A-Za-z0-9_./+-]* ]] || { printf '%s' "$2"; return 0; };;
    esac
    local q="'"
    printf "'%s'" "${2//$q/$q$q}"
}
