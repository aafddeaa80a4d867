#!/bin/sh
# run-python.sh: run one Python interop test under $PYTHON_TEST, the Python
# that configure found with h5py, hdf5plugin and numpy; skip (77) without one.
if test -z "$PYTHON_TEST"; then
	echo "SKIP: no Python with h5py, hdf5plugin and numpy (install python3-h5py python3-hdf5plugin python3-numpy)"
	exit 77
fi
if test $# -ne 1; then
	echo "usage: run-python.sh TEST.py" >&2
	exit 2
fi
exec "$PYTHON_TEST" "$1"
