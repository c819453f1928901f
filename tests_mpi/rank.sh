#!/bin/sh
# One rank of `make test-mpi`: rank 0 prints pytest's report; the other ranks print theirs only when
# they fail. Any rank's non-zero exit makes mpirun exit non-zero.
rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}
if [ "$rank" = 0 ]; then exec "$@"; fi
log=$(mktemp)
"$@" >"$log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then echo "== rank $rank failed (exit $rc):"; cat "$log"; fi
rm -f "$log"
exit $rc
