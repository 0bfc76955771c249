#!/usr/bin/env bash
# Static checks of what cannot run here (no Docker engine, no cluster, no AWS account):
#   compose.yaml      the Compose specification's JSON schema + its references and env template
#   RabbitMQ          definitions.json is what the kernel declares (when the project venv exists)
#   deploy/k8s        rendered by kustomize (kubectl's), validated against Kubernetes 1.30 and 1.37
#   deploy/terraform  parsed (python-hcl2); variables declared; no secret has a default
#   CI workflow       the GitHub workflow JSON schema
#   checkov           Dockerfile, the rendered production manifests, Terraform, the workflow:
#                     no failed check at all (skips are inline, each with its reason)
# Tools come from PyPI, pinned by hash (deploy/tools/*.txt), into venvs under .tools/deploy.
#
#   deploy/check.sh          run every check (what `make deploy-check` and CI run)
#   deploy/check.sh --prove  break each input on purpose (in a scratch copy) and show that the
#                            check guarding it fails
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=${DEPLOY_TOOLS:-$ROOT/.tools/deploy}
UV=${UV:-$(command -v uv || echo "$ROOT/.tools/bin/uv")}
PYTHON=${PYTHON:-python3}
K8S_VERSIONS=${K8S_VERSIONS:-1.30.0 1.37.0}

say() { printf '\n== %s\n' "$*"; }

install_tools() {
  [ -x "$UV" ] || { echo "uv not found: run \`make deploy-check\` (it installs uv) or set UV"; exit 2; }
  for venv in validate checkov; do
    local req="$ROOT/deploy/tools/$venv.txt" stamp="$TOOLS/$venv/.installed"
    if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
      echo "installing $venv tools into $TOOLS/$venv"
      rm -rf "${TOOLS:?}/$venv"
      "$UV" venv -q --python "$PYTHON" "$TOOLS/$venv"
      VIRTUAL_ENV="$TOOLS/$venv" "$UV" pip install -q --require-hashes -r "$req"
      cp "$req" "$stamp"
    fi
  done
  V="$TOOLS/validate/bin"
  C="$TOOLS/checkov/bin"
}

# --- one function per check; each takes its input paths, so --prove can hand it a broken copy

check_compose() { # COMPOSE_FILE ENV_TEMPLATE
  # `|| return`: errexit does not apply inside a function called from `if` (as --prove does).
  "$V/check-jsonschema" --builtin-schema vendor.compose-spec "$1" || return
  "$V/python" "$ROOT/deploy/checks/compose_refs.py" "$1" "$2"
}

check_rabbitmq() { # DEFINITIONS_JSON
  "$V/python" -c 'import json, sys; json.load(open(sys.argv[1]))' "$1" || return
  if [ -x "$ROOT/.venv/bin/python" ] && [ "$1" = "$ROOT/deploy/rabbitmq/definitions.json" ]; then
    "$ROOT/.venv/bin/python" "$ROOT/deploy/rabbitmq/definitions.py" --check
  else
    echo "ok -- $1 is JSON (its match with the kernel is checked with the project venv and by make test)"
  fi
}

render() { # KUSTOMIZATION_DIR OUT_FILE
  "$V/kubectl" kustomize "$1" >"$2"
}

check_k8s() { # KUSTOMIZE_ROOT (holds base/ and overlays/*/) OUT_DIR
  local dir out name version report
  mkdir -p "$2"
  for dir in "$1/base" "$1"/overlays/*/; do
    dir=${dir%/}
    name=$(basename "$dir")
    out="$2/$name.yaml"
    render "$dir" "$out" || return
    echo "rendered $dir: $(grep -c '^kind:' "$out") resources"
    for version in $K8S_VERSIONS; do
      # Unknown kinds are only a WARN to kubernetes-validate; here they fail like errors.
      report=$("$V/kubernetes-validate" --strict --quiet -k "$version" "$out" 2>&1) || {
        echo "$report"; return 1; }
      if grep -qE 'WARN|ERROR' <<<"$report"; then echo "$report"; return 1; fi
      echo "ok -- $name valid against Kubernetes $version (strict)"
    done
  done
}

check_terraform() { # DIR
  "$V/python" "$ROOT/deploy/checks/terraform_refs.py" "$1"
}

check_workflow() { # WORKFLOW_FILE
  "$V/check-jsonschema" --builtin-schema vendor.github-workflows "$1"
}

checkov() { # FRAMEWORK PATH...
  local framework=$1
  shift
  local args=()
  for path in "$@"; do
    if [ -d "$path" ]; then args+=(-d "$path"); else args+=(-f "$path"); fi
  done
  # --skip-download: offline, no platform API. Every failed check fails the run (offline
  # checkov has no severities, so this is stricter than "no HIGH findings").
  "$C/checkov" --framework "$framework" "${args[@]}" --compact --quiet --skip-download
}

run_all() {
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  say "compose.yaml: Compose specification schema, references, env template"
  check_compose compose.yaml deploy/env.example
  say "RabbitMQ definitions"
  check_rabbitmq "$ROOT/deploy/rabbitmq/definitions.json"
  say "Kubernetes: kustomize render + schema validation"
  check_k8s deploy/k8s "$work/k8s"
  say "Terraform: parse and variables"
  check_terraform deploy/terraform
  say "GitHub workflow schema"
  check_workflow .github/workflows/ci.yml
  say "checkov: Dockerfile"
  checkov dockerfile deploy/Dockerfile
  say "checkov: rendered production manifests"
  checkov kubernetes "$work/k8s/production.yaml"
  say "checkov: Terraform"
  checkov terraform deploy/terraform
  say "checkov: GitHub workflow"
  checkov github_actions .github/workflows/ci.yml
  say "every deploy check passed"
}

# --- --prove: each check must fail on a broken copy of its input -------------------------------

expect_failure() { # DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@" >"$PROVE/last.log" 2>&1; then
    echo "NOT CAUGHT: $what"
    cat "$PROVE/last.log"
    CAUGHT=false
  else
    echo "caught: $what -- $(grep -m1 -iE 'error|fail|invalid|WARN|not ' "$PROVE/last.log" | cut -c1-150)"
  fi
}

prove() {
  PROVE=$(mktemp -d)
  trap 'rm -rf "$PROVE"' EXIT
  CAUGHT=true
  local p=$PROVE

  cp compose.yaml "$p/compose.yaml"; cp deploy/env.example "$p/env.example"
  mkdir -p "$p/deploy/rabbitmq"; cp deploy/rabbitmq/* "$p/deploy/rabbitmq/"
  sed -i 's/condition: service_completed_successfully/condition: service_finished/' "$p/compose.yaml"
  expect_failure "compose: an unknown depends_on condition" check_compose "$p/compose.yaml" "$p/env.example"
  cp compose.yaml "$p/compose.yaml"
  sed -i 's/^      test: \["CMD-SHELL"/      tests: ["CMD-SHELL"/' "$p/compose.yaml"
  expect_failure "compose: a misspelt health-check key" check_compose "$p/compose.yaml" "$p/env.example"
  cp compose.yaml "$p/compose.yaml"
  sed -i 's/^      rabbitmq:$/      rabbit:/' "$p/compose.yaml"
  expect_failure "compose: depends_on an undefined service" check_compose "$p/compose.yaml" "$p/env.example"
  cp compose.yaml "$p/compose.yaml"
  sed -i '/^JWT_PRIVATE_KEY=/d' "$p/env.example"
  expect_failure "compose: a required secret missing from the env template" check_compose "$p/compose.yaml" "$p/env.example"

  echo '{"queues": [' >"$p/broken.json"
  expect_failure "rabbitmq: definitions that are not JSON" check_rabbitmq "$p/broken.json"

  cp -r deploy/k8s "$p/k8s"
  sed -i 's/containerPort: 8080/containerPort: "8080"/' "$p/k8s/base/catalog.yaml"
  expect_failure "k8s: a port given as a string" check_k8s "$p/k8s" "$p/out1"
  rm -rf "$p/k8s"; cp -r deploy/k8s "$p/k8s"
  sed -i 's/^  minAvailable: 1$/  minAvailable: 1\n  maxUnavailabel: 1/' "$p/k8s/base/auth.yaml"
  expect_failure "k8s: a misspelt field (strict schema)" check_k8s "$p/k8s" "$p/out2"
  rm -rf "$p/k8s"; cp -r deploy/k8s "$p/k8s"
  sed -i 's/  - resale.yaml/  - resales.yaml/' "$p/k8s/base/kustomization.yaml"
  expect_failure "k8s: kustomization naming a missing file" check_k8s "$p/k8s" "$p/out3"
  rm -rf "$p/k8s"; cp -r deploy/k8s "$p/k8s"
  sed -i 's|apiVersion: autoscaling/v2|apiVersion: autoscaling/v2beta2|' "$p/k8s/base/ordering.yaml"
  expect_failure "k8s: an API version the cluster no longer serves" check_k8s "$p/k8s" "$p/out4"

  cp -r deploy/terraform "$p/tf"
  sed -i '0,/^}/s/^}//' "$p/tf/alb.tf"
  expect_failure "terraform: a missing closing brace" check_terraform "$p/tf"
  rm -rf "$p/tf"; cp -r deploy/terraform "$p/tf"
  sed -i 's/^variable "mq_password" {$/variable "mq_password" {\n  default = "guestguestguest1"/' "$p/tf/variables.tf"
  expect_failure "terraform: a secret with a default" check_terraform "$p/tf"
  rm -rf "$p/tf"; cp -r deploy/terraform "$p/tf"
  sed -i 's/var.mq_instance_type/var.mq_instance_size/' "$p/tf/data.tf"
  expect_failure "terraform: an undeclared variable" check_terraform "$p/tf"

  mkdir -p "$p/wf"; cp .github/workflows/ci.yml "$p/wf/ci.yml"
  sed -i 's/^    runs-on:/    runs_on:/' "$p/wf/ci.yml"
  expect_failure "workflow: a misspelt key" check_workflow "$p/wf/ci.yml"

  grep -v '^USER ' deploy/Dockerfile >"$p/Dockerfile"
  expect_failure "checkov: an image that runs as root" checkov dockerfile "$p/Dockerfile"
  rm -rf "$p/k8s"; cp -r deploy/k8s "$p/k8s"
  sed -i 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$p/k8s/base/gateway.yaml"
  render "$p/k8s/overlays/production" "$p/production.yaml"
  expect_failure "checkov: a writable root filesystem" checkov kubernetes "$p/production.yaml"
  rm -rf "$p/tf"; cp -r deploy/terraform "$p/tf"
  sed -i 's/storage_encrypted                   = true/storage_encrypted                   = false/' "$p/tf/data.tf"
  expect_failure "checkov: an unencrypted database" checkov terraform "$p/tf"

  $CAUGHT || { echo "some broken input was NOT caught"; exit 1; }
  say "every check failed on its broken input"
}

install_tools
if [ "${1:-}" = "--prove" ]; then prove; else run_all; fi
