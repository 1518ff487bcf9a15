#!/bin/sh
# Builds out/spark-totals.jar with javac and jar against Spark's jars folder.
#
#   sh build.sh [SPARK_JARS]
#
# Builds run with a clean environment (only PATH and HOME), so without an argument the jars
# folder is looked for: $SPARK_HOME/jars, a `.venv-spark` (made by scripts/spark.sh) in a folder
# above this one (the example's state_dir lies inside the jobkeeper checkout), the pyspark of
# `python3`, then /opt/spark/jars.
set -eu
jars="${1:-}"
if [ -z "$jars" ] && [ -n "${SPARK_HOME:-}" ]; then jars="$SPARK_HOME/jars"; fi
if [ -z "$jars" ]; then
  d="$PWD"
  while [ "$d" != "/" ]; do
    py="$d/.venv-spark/bin/python"
    if [ -x "$py" ]; then
      jars="$("$py" -c 'import pyspark,os;print(os.path.dirname(pyspark.__file__))' 2>/dev/null)/jars" || jars=""
    fi
    [ -n "$jars" ] && break
    d="$(dirname "$d")"
  done
fi
if [ -z "$jars" ]; then
  jars="$(python3 -c 'import pyspark,os;print(os.path.dirname(pyspark.__file__))' 2>/dev/null)/jars" || jars=""
fi
[ -n "$jars" ] && [ -d "$jars" ] || jars=/opt/spark/jars
if ! ls "$jars"/spark-core_*.jar >/dev/null 2>&1; then
  echo "Spark's jars folder not found (tried $jars): run scripts/spark.sh jars, or pass it: sh build.sh DIR" >&2
  exit 1
fi
rm -rf out && mkdir -p out/classes
javac --release 17 -nowarn -cp "$jars/*" -d out/classes src/example/Totals.java
jar cf out/spark-totals.jar -C out/classes .
echo "built out/spark-totals.jar against $jars"
