#!/usr/bin/env bash
# Idempotent set-up for kubm on Debian 12 (bookworm) with Python >= 3.11.
#   1. Debian packages for headless rendering (only those missing; root only)
#   2. .venv (python3.11 preferred)
#   3. pip install -c constraints.txt -e '.[test]' (skipped when the stamp is fresh)
# Env: KUBM_SKIP_APT=1 skips step 1; KUBM_APT_ETC overrides /etc/apt (tests only).
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }

APT_ETC="${KUBM_APT_ETC:-/etc/apt}"
BACKPORTS_LIST="$APT_ETC/sources.list.d/kubm-backports.list"
# MuJoCo renders through EGL (default) or OSMesa; SAPIEN 3 needs a Vulkan loader.
APT_PKGS=(libegl1 libgl1 libosmesa6 libvulkan1)
# SAPIEN 3 rejects bookworm's Mesa 22 lavapipe (no descriptorBindingPartiallyBound).
MESA_MIN=25

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

mesa_version() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true; }

mesa_ok() {
  local v; v=$(mesa_version)
  [ -n "$v" ] && is_installed mesa-vulkan-drivers && dpkg --compare-versions "$v" ge "$MESA_MIN"
}

codename() { (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true; }

# Print "URI<TAB>signed-by" of the first enabled deb source for suite $1, read from the
# machine's own one-line (*.list) and deb822 (*.sources) files, so no host is hard-coded.
apt_source_for_suite() {
  local suite=$1 f files=()
  [ -f "$APT_ETC/sources.list" ] && files+=("$APT_ETC/sources.list")
  for f in "$APT_ETC"/sources.list.d/*.list "$APT_ETC"/sources.list.d/*.sources; do
    [ -f "$f" ] && [ "$f" != "$BACKPORTS_LIST" ] && files+=("$f")
  done
  for f in "${files[@]}"; do
    case "$f" in
      *.sources) awk -v want="$suite" '
          function flush() {
            gsub(/[ \t]+/, " ", types); gsub(/[ \t]+/, " ", suites)
            if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " want " ") && uris != "") {
              split(uris, u, " "); print u[1] "\t" signed; found = 1; exit
            }
            types = uris = suites = signed = ""; enabled = "yes"
          }
          BEGIN { enabled = "yes" }
          /^[ \t]*#/ { next }
          /^[ \t]*$/ { flush(); next }
          {
            key = tolower($1); sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
            if (key == "types") types = val; else if (key == "uris") uris = val
            else if (key == "suites") suites = val; else if (key == "enabled") enabled = tolower(val)
            else if (key == "signed-by") signed = val
          }
          END { if (!found) flush() }' "$f" ;;
      *) awk -v want="$suite" '
          $1 == "deb" {
            line = $0; signed = ""
            if (match(line, /\[[^]]*\]/)) {
              opts = substr(line, RSTART + 1, RLENGTH - 2); line = substr(line, 1, RSTART - 1) substr(line, RSTART + RLENGTH)
              if (match(opts, /signed-by=[^ ]+/)) signed = substr(opts, RSTART + 10, RLENGTH - 10)
            }
            split(line, w, /[ \t]+/)
            if (w[3] == want) { print w[2] "\t" signed; exit }
          }' "$f" ;;
    esac | head -n 1
  done | head -n 1
}

has_suite() { [ -n "$(apt_source_for_suite "$1")" ]; }

# Write kubm-backports.list from the mirror that already serves bookworm.
add_backports() {
  local cn=$1 entry uri signed opts=""
  if [ -f "$BACKPORTS_LIST" ] || has_suite "$cn-backports"; then say "apt: $cn-backports already configured"; return 0; fi
  entry=$(apt_source_for_suite "$cn")
  if [ -z "$entry" ]; then
    warn "no apt source for suite '$cn' found in $APT_ETC; cannot add $cn-backports"; return 1
  fi
  uri=${entry%%$'\t'*}; signed=${entry#*$'\t'}
  # A signed-by that is a file path carries over; an inline key block would not fit one line.
  if [ -n "$signed" ] && [ "${signed#/}" != "$signed" ]; then opts="[signed-by=$signed] "; fi
  say "apt: adding $BACKPORTS_LIST ($uri $cn-backports main)"
  printf 'deb %s%s %s-backports main\n' "$opts" "$uri" "$cn" >"$BACKPORTS_LIST"
}

apt_step() {
  if [ "${KUBM_SKIP_APT:-0}" = "1" ]; then say "apt: skipped (KUBM_SKIP_APT=1)"; return 0; fi
  if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    warn "apt-get not found: install ${APT_PKGS[*]} and Mesa >= $MESA_MIN mesa-vulkan-drivers yourself"; return 0
  fi
  local missing=() p cn need_mesa=0
  for p in "${APT_PKGS[@]}"; do is_installed "$p" || missing+=("$p"); done
  mesa_ok || need_mesa=1
  if [ ${#missing[@]} -eq 0 ] && [ $need_mesa -eq 0 ]; then
    say "apt: rendering packages present (mesa-vulkan-drivers $(mesa_version))"; return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    warn "not root: missing ${missing[*]:-}$([ $need_mesa -eq 1 ] && echo " mesa-vulkan-drivers>=$MESA_MIN"); rerun as root or install them"
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  cn=$(codename)
  # Only bookworm needs backports; newer releases already ship Mesa >= 25.
  if [ $need_mesa -eq 1 ] && [ "$cn" = bookworm ]; then add_backports "$cn"; fi
  say "apt: apt-get update"
  apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    say "apt: installing ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if [ $need_mesa -eq 1 ]; then
    local target=()
    [ "$cn" = bookworm ] && target=(-t bookworm-backports)
    say "apt: installing mesa-vulkan-drivers ${target[*]}"
    apt-get install -y -qq --no-install-recommends "${target[@]}" mesa-vulkan-drivers
    mesa_ok || { warn "mesa-vulkan-drivers $(mesa_version) < $MESA_MIN: SAPIEN rendering will fail"; return 1; }
  fi
  say "apt: done (mesa-vulkan-drivers $(mesa_version))"
}

pick_python() {
  local py
  for py in python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

venv_step() {
  if [ -x .venv/bin/python ]; then say "venv: .venv exists ($(.venv/bin/python -V 2>&1))"; return 0; fi
  local py; py=$(pick_python) || { warn "need Python >= 3.11 (python3.11 or python3)"; return 1; }
  say "venv: creating .venv with $py ($("$py" -V 2>&1))"
  "$py" -m venv .venv
}

pip_step() {
  local stamp=.venv/.kubm-installed
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt constraints.txt ] && [ "$stamp" -nt scripts/setup.sh ]; then
    say "pip: up to date ($stamp newer than pyproject.toml, constraints.txt, setup.sh)"; return 0
  fi
  say "pip: installing -c constraints.txt -e '.[test]'"
  # constraints.txt pins the CPU torch build; without it pip may pull the CUDA wheel.
  .venv/bin/python -m pip install --no-input -q -c constraints.txt -e '.[test]'
  # Perception models, installed without their declared deps: sam2 and the cotracker
  # package (carried unmodified by the napari-cotrack wheel) list torchvision, which
  # would pull a CUDA torch. Their real runtime deps are in pyproject.toml.
  # sam2's pyproject lists torch as a build requirement: build against the installed one.
  SAM2_BUILD_CUDA=0 .venv/bin/python -m pip install --no-input -q -c constraints.txt \
    --no-deps --no-build-isolation "sam2==1.1.0"
  .venv/bin/python -m pip install --no-input -q -c constraints.txt \
    --no-deps --ignore-requires-python "napari-cotrack==0.1.7"
  # DexArt robot assets only (Allegro URDF + meshes); mani_skill's Python code is never
  # imported, and its declared deps (mplib, pytorch_kinematics, ...) are not needed.
  .venv/bin/python -m pip install --no-input -q -c constraints.txt --no-deps "mani-skill==3.0.1"
  touch "$stamp"
}

apt_step
venv_step
pip_step
say "done"
