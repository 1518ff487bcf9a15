#!/bin/sh
# Builds out/flink-counter.jar with javac and jar against Flink's lib folder.
#
#   sh build.sh [FLINK_LIB | FLINK_VERSION]
#
# One jar per Flink version: given a version (`1.20.3`; a job file passes its env's
# `${var:FLINK_VERSION}`), the jar is built against that version's lib folder, the
# `.venv-flink-X.Y` scripts/flink.sh makes for it (`.venv-flink` for 2.3.0) in a folder above this
# one. Builds run with a clean environment (only PATH and HOME), so without an argument the lib
# folder is looked for: $FLINK_HOME/lib, a `.venv-flink` (made by scripts/flink.sh) in a folder
# above this one (the example's state_dir lies inside the jobkeeper checkout), the pyflink of
# `python3`, then /opt/flink/lib.
set -eu
lib="${1:-}"
venv_name=.venv-flink
case "$lib" in
  2.3.0) lib="" ;;
  [0-9]*.[0-9]*) venv_name=".venv-flink-$(echo "$lib" | cut -d. -f1-2)"; lib="" ;;
esac
if [ -z "$lib" ] && [ "$venv_name" = .venv-flink ] && [ -n "${FLINK_HOME:-}" ]; then lib="$FLINK_HOME/lib"; fi
if [ -z "$lib" ]; then
  d="$PWD"
  while [ "$d" != "/" ]; do
    for py in "$d/$venv_name/bin/python"; do
      if [ -x "$py" ]; then
        lib="$("$py" -c 'import pyflink,os;print(os.path.dirname(pyflink.__file__))' 2>/dev/null)/lib" || lib=""
      fi
    done
    [ -n "$lib" ] && break
    d="$(dirname "$d")"
  done
fi
if [ -z "$lib" ]; then
  lib="$(python3 -c 'import pyflink,os;print(os.path.dirname(pyflink.__file__))' 2>/dev/null)/lib" || lib=""
fi
[ -n "$lib" ] && [ -d "$lib" ] || lib=/opt/flink/lib
if ! ls "$lib"/flink-dist-*.jar >/dev/null 2>&1; then
  echo "Flink's lib folder not found (tried $lib): run scripts/flink.sh lib, or pass it: sh build.sh DIR" >&2
  exit 1
fi
rm -rf out && mkdir -p out/classes
javac --release 17 -nowarn -cp "$lib/*" -d out/classes src/example/Counter.java
jar cf out/flink-counter.jar -C out/classes .
echo "built out/flink-counter.jar against $lib"
