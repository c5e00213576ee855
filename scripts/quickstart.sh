#!/usr/bin/env bash
# The quick start: a local lab fleet (1 control plane + 3 compute hosts, real sshd in namespaces,
# stand-in osquery and Bacalhau packages), provisioned by fleetkit, checked, asked questions, and
# its recorded runs listed and turned into the fleet report.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export FLEETKIT_SETTINGS="$PWD/.lab/fleetkit.yaml"

invoke lab.down --dir .lab >/dev/null 2>&1 || true
invoke lab.up --dir .lab --compute 3
trap 'invoke lab.down --dir .lab' EXIT

invoke provision                  # converge every host; ends with the per-host recap
invoke provision                  # idempotent: "no changes"
invoke lab.show node-1            # what ended up on one host
invoke verify || true             # readiness, check by check
invoke query "SELECT hostname, cpu_brand, physical_memory FROM system_info" --format table
invoke query "SELECT u.username, k.path, k.encrypted, k.key_type FROM users u CROSS JOIN user_ssh_keys k USING (uid) WHERE k.encrypted = 0 OR k.key_type <> 'ec'"
invoke policy                     # compliance pack: every SSH key encrypted and elliptic-curve
invoke hunt --path /var/www/htdocs/wp-content/themes/goldenrod/functions.php \
    --sha256 ef59adcbcf15a19cd742cfc3f3d45da135684eab56e042726a4fd4e4b77e94a6   # the post's trojan
invoke history                    # every run above, recorded in .lab/.fleetkit/history.db
invoke report --output .lab/report.html   # the fleet at a glance: one static HTML file
