#!/usr/bin/env bash
# The Flatnet soak (see soak.py): starts the Podman 5 namespace and its test
# image, runs the soak with the options given, stops the namespace.
#
#   sudo tests/soak/run.sh --duration 10m --seed 7      # CI's short profile
#   sudo tests/soak/run.sh --duration 7d --report /var/tmp/soak-week.json
#
# Needs the release build (cargo build --release) and scripts/deps.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/podman5.bash
source "$HERE/../integration/podman5.bash"
[ "$(id -u)" = 0 ] || { echo "tests/soak/run.sh: run as root" >&2; exit 2; }
p5_setup_file
trap p5_teardown_file EXIT
python3 "$HERE/soak.py" "$@"
