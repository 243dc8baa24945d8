#!/bin/sh
# Source checks that the compiler does not make: no new/delete expressions
# outside arenas, no exceptions in src/.
set -u
rc=0
if grep -rnE '(^|[^_a-zA-Z])(throw|try)[[:space:]]*[({;]' src --include='*.cc' --include='*.h'; then
    echo "lint: exceptions are not used in src/ (STYLE.md section 5)" >&2; rc=1
fi
if grep -rnE '(=|return)[[:space:]]*new[[:space:]]+[A-Za-z_]' src --include='*.cc' --include='*.h' | grep -v 'placement'; then
    echo "lint: no naked new in src/ (STYLE.md section 4)" >&2; rc=1
fi
exit $rc
