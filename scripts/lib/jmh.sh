# shellcheck shell=bash
# Runs the project's JMH benchmarks for the scripts/bench-* wrappers:
#   bounce_jmh NAME DEFAULT_REGEX "WARMUP_ITERATIONS MEASURED_ITERATIONS" "$@"
# Builds benchmarks/target/benchmarks.jar, then runs JMH with quick settings (one fork, 1 s per
# iteration). Arguments go on to JMH: an option given replaces the quick setting of the same name (JMH
# rejects an option given twice), any other is added, and a first argument that is not an option
# replaces the benchmark regex. With BOUNCE_JMH_MAIN set, that class of the jar runs instead of JMH's
# own main, with the same arguments (a runner that post-processes the results).

# Whether the JMH arguments "$@" (after $1) set option $1.
bounce_jmh_given() {
  local name=$1 arg
  shift
  for arg in "$@"; do
    case $arg in
      "-$name" | "-$name="* | "--$name" | "--$name="*) return 0 ;;
    esac
    # Single-letter options also take their value attached: -f2, -i10, -r2s.
    if [[ ${#name} -eq 1 && $arg =~ ^-${name}[0-9] ]]; then return 0; fi
  done
  return 1
}

bounce_jmh() {
  local name=$1 benchmarks=$2 warmup measured option option_name value
  read -r warmup measured <<<"$3"
  shift 3
  if [[ $# -gt 0 && $1 != -* ]]; then
    benchmarks=$1
    shift
  fi
  local settings=()
  for option in 'f 1' "wi $warmup" 'w 1s' "i $measured" 'r 1s'; do
    read -r option_name value <<<"$option"
    bounce_jmh_given "$option_name" "$@" || settings+=("-$option_name" "$value")
  done
  cd "$root"
  echo "$name: building benchmarks/target/benchmarks.jar (./mvnw -q -Pbench -pl benchmarks -am package) with JDK $JAVA_HOME" >&2
  ./mvnw -q -Pbench -pl benchmarks -am package -DskipTests
  echo "$name: built; running JMH '$benchmarks' ${settings[*]}${*:+ $*}" >&2
  echo "$name: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); one forked JVM per benchmark and parameter, each iteration printed as it goes" >&2
  # JMH 1.37 still uses sun.misc.Unsafe (a warning per JVM since JDK 24); forks inherit these flags.
  local main=(-jar benchmarks/target/benchmarks.jar)
  [[ -n ${BOUNCE_JMH_MAIN:-} ]] && main=(-cp benchmarks/target/benchmarks.jar "$BOUNCE_JMH_MAIN")
  exec "$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow \
    "${main[@]}" "$benchmarks" "${settings[@]}" "$@"
}
