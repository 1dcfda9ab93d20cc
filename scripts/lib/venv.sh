# Shared by scripts/test, scripts/dev and scripts/check: create or update the
# virtualenv in $VENV (default .venv) and install the project into it.
VENV="${VENV:-.venv}"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "RAP needs Python 3.11 or newer; none was found (set PYTHON=...)" >&2
  return 1
}

# ensure_venv SPEC...: pip-install SPEC (e.g. ".[test]") into the venv, quietly,
# skipping the install when nothing it depends on has changed since last time.
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    local py
    py=$(find_python)
    echo "creating $VENV with $py" >&2
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  local key want log="$VENV/.pip.log"
  key=$(echo "$*" | sha256sum | cut -c1-8)
  want=$(cat setup.cfg pyproject.toml requirements/*.txt 2>/dev/null | sha256sum | cut -c1-16)
  local stamp="$VENV/.rap-installed-$key"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing $* into $VENV" >&2
    if ! "$VENV/bin/python" -m pip install -q -e "$@" >"$log" 2>&1; then
      grep -v "^WARNING: Location" "$log" >&2
      echo "pip install failed (full log: $log)" >&2
      return 1
    fi
    echo "$want" > "$stamp"
  fi
}
