# shellcheck shell=bash
# Shared by the scripts in scripts/realvm: progress lines, Debian packages, the cache folder.

realvm_say() { echo "realvm: $*" >&2; }

# realvm_cache: where built kernels live across runs (and across clones on one machine).
realvm_cache() { echo "${XDG_CACHE_HOME:-$HOME/.cache}/bounce/realvm"; }

# realvm_need_packages PKG...: installs the Debian packages that dpkg says are absent. Needs root and
# apt-get; without them it fails naming what to install, because the real-VM tests must not silently skip.
realvm_need_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    case "$(dpkg -s "$pkg" 2>/dev/null)" in
      *"Status: install ok installed"*) ;;
      *) missing+=("$pkg") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    realvm_say "missing Debian packages: ${missing[*]}; as root run: apt-get install ${missing[*]}"
    return 1
  fi
  realvm_say "installing ${missing[*]} (apt-get install -y --no-install-recommends)"
  export DEBIAN_FRONTEND=noninteractive
  realvm_apt install -y --no-install-recommends "${missing[@]}" ||
    { realvm_apt update && realvm_apt install -y --no-install-recommends "${missing[@]}"; }
}

# realvm_apt ARGS...: apt-get, its output on stderr; another apt (scripts/test's install, a parallel
# prepare) may hold dpkg's lock, so wait for it rather than fail.
realvm_apt() { apt-get -q -o DPkg::Lock::Timeout=600 "$@" >&2; }

# realvm_locked FILE CMD...: runs CMD holding an exclusive lock on FILE, so that two test runs on one
# machine build a cached artifact once instead of twice at the same time.
realvm_locked() {
  local lock=$1
  shift
  mkdir -p "$(dirname "$lock")"
  (
    flock -n 9 || { realvm_say "waiting for $lock: another run is filling the cache (scripts/test starts the arm64 kernel build)" && flock 9; }
    "$@"
  ) 9>"$lock"
}
