# Sourced by scripts/check-deploy and scripts/check-chart (from the repository root, with
# TOOLS_DIR set): `lint_checks` runs `ruff check` and `ruff format --check` over the check
# programs in scripts/checks before they run. ruff is the version ruff.toml requires, installed
# once from PyPI into $TOOLS_DIR/ruff-VERSION (outside the clone) and reused; nothing is
# written into the clone (no ruff cache).
lint_checks() {
  local version venv
  version=$(sed -n 's/^required-version = "==\(.*\)"$/\1/p' scripts/checks/ruff.toml)
  [ -n "$version" ] || { echo "lint: no required-version in scripts/checks/ruff.toml" >&2; return 1; }
  venv=$TOOLS_DIR/ruff-$version
  if [ "$("$venv/bin/ruff" --version 2>/dev/null)" != "ruff $version" ]; then
    echo "lint: installing ruff $version (PyPI) into $venv"
    python3 -m venv --clear "$venv" || { echo "lint: python3 -m venv failed" >&2; return 1; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "ruff==$version" || return 1
  fi
  "$venv/bin/ruff" check --no-cache --quiet scripts/checks &&
    "$venv/bin/ruff" format --no-cache --check --quiet scripts/checks ||
    { echo "lint: ruff findings in scripts/checks (fix: ruff check --fix; ruff format)" >&2; return 1; }
}
