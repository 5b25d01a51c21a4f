# shellcheck shell=sh
# Finds a JDK 25 or newer and exports JAVA_HOME for it, so nobody has to set it by hand.
# Sourced by ./mvnw and every script in scripts/ (POSIX sh: mvnw is a sh script).
# Order: $JAVA_HOME if it is new enough, then /usr/lib/jvm/*, then the java on PATH.

bounce_jdk_major() { # $1 = a java executable; prints its feature version (17, 25, ...)
  "$1" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p'
}

bounce_use_jdk25() {
  for candidate in "${JAVA_HOME-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*; do
    [ -n "$candidate" ] && [ -x "$candidate/bin/javac" ] || continue
    major=$(bounce_jdk_major "$candidate/bin/java")
    if [ "${major:-0}" -ge 25 ]; then
      JAVA_HOME=$candidate
      export JAVA_HOME
      return 0
    fi
  done
  if command -v javac >/dev/null 2>&1; then
    home=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
    major=$(bounce_jdk_major "$home/bin/java")
    if [ "${major:-0}" -ge 25 ]; then
      JAVA_HOME=$home
      export JAVA_HOME
      return 0
    fi
  fi
  echo "bounce: no JDK 25 or newer found (looked at \$JAVA_HOME, /usr/lib/jvm/*, the javac on PATH)." >&2
  echo "bounce: install one (for example Temurin 25 into /usr/lib/jvm/temurin-25-jdk-amd64) or point JAVA_HOME at it." >&2
  return 1
}
