#!/usr/bin/env bash
# The SSH credential of one CI job that runs pulumi against the Docker hosts of $STACK.
#
#   load     remove any key files a job before left, then put $OCTOLLM_SSH_KEY at each identityFile path
#            of the stack (the docker provider's `ssh -i`) and into an ssh-agent of this job (the remote
#            commands log in through it), exported to later steps through $GITHUB_ENV. Fails when the key
#            is empty: a job must never run with a leftover key.
#   cleanup  kill the agent, delete the key files and close and remove the shared SSH connections
#            (~/.ssh/octollm-*, docker_host.ssh_control_path), so the next job on this runner starts from
#            none. Run it in an `if: always()` step.
#
# Needs STACK, RUNNER_TEMP and GITHUB_ENV (set by the runner), and .venv with the program.
set -euo pipefail
umask 077

: "${STACK:?}" "${RUNNER_TEMP:?}" "${GITHUB_ENV:?}"
readonly SOCK="$RUNNER_TEMP/octollm-ssh-agent.sock"
readonly LIST="$RUNNER_TEMP/octollm-identity-files"
readonly PY="${PY:-.venv/bin/python}"

remove_keys() {
  local key
  if [[ -f $LIST ]]; then
    while IFS= read -r key; do
      [[ -z $key ]] || rm -f -- "$key"
    done <"$LIST"
  fi
}

case ${1:-} in
  load)
    install -d -m 700 ~/.ssh
    "$PY" -m tooling.doctor -s "$STACK" --identity-files >"$LIST"
    remove_keys
    if [[ -z ${OCTOLLM_SSH_KEY:-} ]]; then
      echo "::error title=no SSH key::the job's SSH key secret is empty; refusing to run pulumi against $STACK without it" >&2
      exit 1
    fi
    while IFS= read -r key; do
      [[ -z $key ]] || printf '%s\n' "$OCTOLLM_SSH_KEY" >"$key"
    done <"$LIST"
    rm -f -- "$SOCK"
    eval "$(ssh-agent -s -a "$SOCK")" >/dev/null
    {
      echo "SSH_AUTH_SOCK=$SSH_AUTH_SOCK"
      echo "SSH_AGENT_PID=$SSH_AGENT_PID"
    } >>"$GITHUB_ENV"
    first=$(head -n 1 -- "$LIST")
    if [[ -n $first ]]; then
      ssh-add -q -- "$first"
    fi
    ;;
  cleanup)
    if [[ -n ${SSH_AGENT_PID:-} ]]; then
      kill "$SSH_AGENT_PID" 2>/dev/null || true
    fi
    rm -f -- "$SOCK"
    remove_keys
    rm -f -- "$LIST"
    shopt -s nullglob
    for control in ~/.ssh/octollm-*; do
      [[ -S $control ]] && ssh -o ControlPath="$control" -O exit octollm-cleanup >/dev/null 2>&1 || true
      rm -f -- "$control"
    done
    ;;
  *)
    echo "usage: $0 load|cleanup" >&2
    exit 2
    ;;
esac
