#!/bin/sh
# Source checks that the compiler does not make: no new/delete expressions
# outside arenas, no exceptions in src/. What follows "//" on a line is a
# comment and is not checked: "one try (may_retry ...)" is prose.
set -u
rc=0
# code_matching ERE: the lines of src/ whose code, comments cut off, match.
code_matching() {
    grep -rnE "$1" src --include='*.cc' --include='*.h' |
        awk -v re="$1" '{ code = $0; sub(/^[^:]*:[0-9]+:/, "", code); sub(/\/\/.*/, "", code);
                          if (code ~ re) print }'
}
if code_matching '(^|[^_a-zA-Z])(throw|try)[[:space:]]*[({;]' | grep .; then
    echo "lint: exceptions are not used in src/ (STYLE.md section 5)" >&2; rc=1
fi
if code_matching '(=|return)[[:space:]]*new[[:space:]]+[A-Za-z_]' | grep -v 'placement' | grep .; then
    echo "lint: no naked new in src/ (STYLE.md section 4)" >&2; rc=1
fi
exit $rc
