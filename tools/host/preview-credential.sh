#!/usr/bin/env bash
# Give pull-request previews an SSH key that can read this host's Docker Engine API and change nothing.
# Run once per Docker host, as root. `--help` explains everything; tests/test_preview_credential.py
# runs it against a real sshd and dockerd.
set -euo pipefail
umask 077

PROG=${0##*/}
readonly PROG
# The proxy image: the official haproxy image, LTS branch, pinned. The config below also runs on
# haproxy 2.6 (Debian 12), which is what the tests run it with.
readonly DEFAULT_IMAGE="haproxy:3.0.5"
readonly DEFAULT_SOCKET_DIR="/var/run/octollm-docker-ro"
readonly DEFAULT_DOCKER_SOCKET="/var/run/docker.sock"
readonly DEFAULT_NAME="octollm-docker-ro"
readonly KEY_COMMENT="octollm-preview"
readonly LABEL="org.octollm.preview-proxy"
# Where the official image reads its config (its CMD is `haproxy -f` this file).
readonly IMAGE_CONFIG="/usr/local/etc/haproxy/haproxy.cfg"
# Marker of the proxy's refusals; the self-test looks for it.
readonly REFUSAL="refused by the octollm read-only Docker proxy"

usage() {
  cat <<EOF
Usage: $PROG --key KEY [options]          set up the preview credential on this host
       $PROG --print-config DIR [options] only write DIR/haproxy.cfg

Run once per Docker host, as root. It gives pull-request previews (pulumi preview) their own SSH
key, which can read the Docker Engine API and cannot change anything on the host:

 1. It starts a container, NAME, from IMAGE: haproxy with --restart unless-stopped, no network,
    every capability dropped, the engine's socket mounted read-only. It listens on
    SOCKET_DIR/docker.sock (mode 0600, owned by USER) and passes a request to the engine only if
      - its method is GET or HEAD,
      - it has no Upgrade header, and
      - its path (percent-decoded, with or without the /v1.xx prefix) is none of
        /containers/*/archive, /containers/*/export, /containers/*/logs, /containers/*/attach[/ws],
        /exec/*, /images/get, /images/*/get, /session, /grpc, /swarm/unlockkey, /secrets, /configs,
        and holds no %00, "//", "/./" or "/../".
    Every other request gets 403 with "$REFUSAL".
    Then it checks the proxy: GET /version must answer, and POST .../kill must get that 403.
 2. It adds one line to USER's authorized_keys:
      command="DOCKER_CLI -H unix://SOCKET_DIR/docker.sock system dial-stdio",restrict KEY $KEY_COMMENT
    sshd then runs that command for this key, whatever command the client asks for. restrict
    (OpenSSH 7.2 and newer) turns off the pty and all forwarding (TCP, unix sockets, agent, X11)
    and ~/.ssh/rc. An older sshd rejects the line, so the key then gets no access at all.

Running it again changes nothing. A changed option recreates the container. The script refuses a
key that the file already lists in another line, for example the deploy key itself: sshd would use
the first line that matches, and that may be the unrestricted one.

Options:
  --key KEY               the preview public key: a file, - for stdin, or the key itself
                          ("ssh-ed25519 AAAA... comment"). One key, without options.
  --user USER             the login user the key logs in as (default: root)
  --authorized-keys FILE  the file to add the line to (default: ~USER/.ssh/authorized_keys)
  --socket-dir DIR        where the proxy's socket goes (default: $DEFAULT_SOCKET_DIR). DIR must
                          be owned by root and writable by root only; it is created if missing.
  --docker-socket PATH    the engine's socket (default: $DEFAULT_DOCKER_SOCKET)
  --image IMAGE           the haproxy image, pinned by tag or digest (default: $DEFAULT_IMAGE)
  --name NAME             the proxy container's name (default: $DEFAULT_NAME)
  --docker-cli PATH       the docker CLI the key runs (default: the docker on PATH)
  --no-proxy-container    leave the proxy alone (it runs some other way); only add the line
  --print-config DIR      only write the proxy's config to DIR/haproxy.cfg, for SOCKET_DIR, the
                          engine's socket and USER; change nothing else
  -h, --help              this text

Then put the matching private key in the repository secret the preview workflow reads.

Revoke: delete the line ending in " $KEY_COMMENT" from the authorized_keys file, then
  docker rm -f $DEFAULT_NAME
EOF
}

die() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

say() {
  printf '%s: %s\n' "$PROG" "$*"
}

warn() {
  printf '%s: warning: %s\n' "$PROG" "$*" >&2
}

# A path goes into the authorized_keys command and the haproxy config, so it is held to characters
# that need no quoting in either: absolute, [A-Za-z0-9._/-], no empty, . or .. component.
check_path() {
  local what=$1 value=$2
  [[ $value =~ ^/[A-Za-z0-9._/-]*$ ]] || die "$what must be an absolute path of [A-Za-z0-9._/-] only: '$value'"
  [[ $value != *//* && $value != */./* && $value != */../* && $value != */. && $value != */.. ]] ||
    die "$what must not contain '//', '.' or '..' components: '$value'"
  [[ ${#value} -le 200 ]] || die "$what is longer than 200 characters"
}

strip_slash() {
  local value=$1
  while [[ ${#value} -gt 1 && $value == */ ]]; do
    value=${value%/}
  done
  printf '%s' "$value"
}

# ---- arguments -------------------------------------------------------------------------------
key_arg=""
user="root"
authorized_keys=""
socket_dir=$DEFAULT_SOCKET_DIR
docker_socket=$DEFAULT_DOCKER_SOCKET
image=$DEFAULT_IMAGE
name=$DEFAULT_NAME
docker_cli=""
proxy_container=1
print_config=""

need_value() {
  [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --key) need_value "$@"; key_arg=$2; shift 2 ;;
    --user) need_value "$@"; user=$2; shift 2 ;;
    --authorized-keys) need_value "$@"; authorized_keys=$2; shift 2 ;;
    --socket-dir) need_value "$@"; socket_dir=$2; shift 2 ;;
    --docker-socket) need_value "$@"; docker_socket=$2; shift 2 ;;
    --image) need_value "$@"; image=$2; shift 2 ;;
    --name) need_value "$@"; name=$2; shift 2 ;;
    --docker-cli) need_value "$@"; docker_cli=$2; shift 2 ;;
    --no-proxy-container) proxy_container=0; shift ;;
    --print-config) need_value "$@"; print_config=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# ---- validation: everything is checked before anything is changed ----------------------------
[[ $user =~ ^[a-z_][a-z0-9_.-]{0,31}$ ]] || die "--user must be a plain user name: '$user'"
uid=$(id -u -- "$user" 2>/dev/null) || die "no such user: $user"
gid=$(id -g -- "$user" 2>/dev/null) || die "no such user: $user"

socket_dir=$(strip_slash "$socket_dir")
check_path --socket-dir "$socket_dir"
[[ $socket_dir != / ]] || die "--socket-dir must not be /"
socket="$socket_dir/docker.sock"
# sun_path holds 107 bytes, and haproxy binds "<path>.<pid>.tmp" before renaming it into place.
[[ ${#socket} -le 90 ]] || die "--socket-dir is too long for a unix socket path: $socket"
check_path --docker-socket "$docker_socket"

# The haproxy config, for the proxy's socket, the engine's socket and the socket's owner.
haproxy_config() {
  cat <<EOF
# Read-only Docker Engine API proxy for the octollm preview key (GET and HEAD only).
# Written by tools/host/preview-credential.sh: run it again rather than edit this file.
global
    log stderr format raw local0 info
    maxconn 64
    nbthread 1

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout http-request 30s
    timeout http-keep-alive 60s
    timeout client 10m
    timeout server 10m

frontend docker_read_only
    bind unix@$socket mode 600 uid $uid gid $gid
    # Read a request's body before answering it: a refusal sent while the client is still writing
    # would reach it as a broken connection instead of a 403.
    option http-buffer-request
    # Paths are matched percent-decoded, as the engine's router sees them, with or without /v1.xx.
    # Container names in the engine's routes may hold slashes ({name:.*}), hence ".+".
    acl read_method  method GET HEAD
    acl upgrade      req.hdr_cnt(upgrade) gt 0
    acl upgrade      req.hdr(connection) -i -m sub upgrade
    acl odd_path     path -m sub %00
    acl odd_path     path,url_dec -m reg '(//|/\.\.?(/|$))'
    acl file_stream  path,url_dec -m reg '^(/v[0-9.]+)?/containers/.+/(archive|export|logs|attach|attach/ws)/?$'
    acl exec         path,url_dec -m reg '^(/v[0-9.]+)?/exec(/|$)'
    acl session      path,url_dec -m reg '^(/v[0-9.]+)?/(session|grpc)(/|$)'
    acl image_export path,url_dec -m reg '^(/v[0-9.]+)?/images/(.+/)?get/?$'
    acl swarm_secret path,url_dec -m reg '^(/v[0-9.]+)?/(swarm/unlockkey|secrets|configs)(/|$)'
    http-request deny deny_status 403 content-type application/json string '{"message":"$REFUSAL: GET and HEAD only, no file contents, logs, attach or exec"}' if !read_method || upgrade || odd_path || file_stream || exec || session || image_export || swarm_secret
    default_backend docker_engine

backend docker_engine
    server engine unix@$docker_socket
EOF
}

if [[ -n $print_config ]]; then
  print_config=$(strip_slash "$print_config")
  check_path --print-config "$print_config"
  mkdir -p -- "$print_config"
  haproxy_config >"$print_config/haproxy.cfg"
  chmod 0644 -- "$print_config/haproxy.cfg"
  say "wrote $print_config/haproxy.cfg"
  exit 0
fi

[[ -n $key_arg ]] || die "--key is required (see --help)"
[[ $(id -u) -eq 0 ]] || die "run this as root"

# The key: one line "type base64 [comment]" of a known type, whose base64 decodes to that type.
if [[ $key_arg == - ]]; then
  key_text=$(cat)
elif [[ $key_arg =~ ^(ssh-|ecdsa-|sk-) ]]; then
  key_text=$key_arg
elif [[ -f $key_arg ]]; then
  key_text=$(cat -- "$key_arg")
else
  die "--key is neither a public key nor a readable file: '$key_arg'"
fi
key_text=${key_text//$'\r'/}
key_lines=$(printf '%s\n' "$key_text" | grep -c -v -e '^[[:space:]]*$' -e '^[[:space:]]*#' || true)
[[ $key_lines -eq 1 ]] || die "--key must hold exactly one public key line (found $key_lines)"
key_line=$(printf '%s\n' "$key_text" | grep -v -e '^[[:space:]]*$' -e '^[[:space:]]*#')
read -r key_type key_blob _ <<<"$key_line"
case ${key_type:-} in
  ssh-ed25519 | ssh-rsa | ecdsa-sha2-nistp256 | ecdsa-sha2-nistp384 | ecdsa-sha2-nistp521 | \
    sk-ssh-ed25519@openssh.com | sk-ecdsa-sha2-nistp256@openssh.com) ;;
  *) die "--key must be an OpenSSH public key without options (ssh-ed25519 AAAA...); got type '${key_type:-}'" ;;
esac
[[ ${key_blob:-} =~ ^[A-Za-z0-9+/]{60,}={0,2}$ ]] || die "--key: the key data is not base64"
# The blob starts with a 4-byte length and the key type again.
decoded_type=$(printf '%s' "$key_blob" | base64 -d 2>/dev/null | head -c $((4 + ${#key_type})) | tail -c "${#key_type}" || true)
[[ $decoded_type == "$key_type" ]] || die "--key: the key data does not decode to a $key_type key"
if command -v ssh-keygen >/dev/null 2>&1; then
  key_tmp=$(mktemp)
  printf '%s %s\n' "$key_type" "$key_blob" >"$key_tmp"
  if ! ssh-keygen -l -f "$key_tmp" >/dev/null 2>&1; then
    rm -f -- "$key_tmp"
    die "--key: ssh-keygen does not accept the key"
  fi
  rm -f -- "$key_tmp"
fi

if [[ -z $docker_cli ]]; then
  docker_cli=$(command -v docker) || die "the docker CLI is not on PATH (give --docker-cli)"
fi
check_path --docker-cli "$docker_cli"
[[ -x $docker_cli ]] || die "--docker-cli is not executable: $docker_cli"

if [[ -z $authorized_keys ]]; then
  home=$(getent passwd "$user" 2>/dev/null | cut -d: -f6) ||
    home=$(awk -F: -v u="$user" '$1 == u { print $6 }' /etc/passwd)
  [[ -n $home ]] || die "cannot find the home directory of $user (give --authorized-keys)"
  authorized_keys="$home/.ssh/authorized_keys"
fi
check_path --authorized-keys "$authorized_keys"

entry="command=\"$docker_cli -H unix://$socket system dial-stdio\",restrict $key_type $key_blob $KEY_COMMENT"

if [[ $proxy_container -eq 1 ]]; then
  [[ $image =~ ^([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$ ]] ||
    die "--image is not an image reference: '$image'"
  image_path=${image%%@*}
  image_path=${image_path##*/}
  [[ $image == *@sha256:* || $image_path == *:* ]] || die "--image must be pinned by tag or digest: '$image'"
  [[ $image_path != *:latest ]] || die "--image must not be :latest: '$image'"
  [[ $name =~ ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$ ]] || die "--name is not a container name: '$name'"
  [[ -S $docker_socket ]] || die "the engine's socket is not a socket: $docker_socket"
fi

# ---- the proxy ---------------------------------------------------------------------------------
# GET /version must pass and a POST must be refused by the proxy itself. The POST names a container
# that does not exist, so even a proxy that let it through could not change anything.
self_test() {
  local out
  out=$("$docker_cli" -H "unix://$socket" version --format '{{.Server.APIVersion}}' 2>&1) ||
    die "the proxy at $socket does not pass GET /version: $out"
  if out=$("$docker_cli" -H "unix://$socket" kill octollm-preview-self-test-no-such-container 2>&1); then
    die "the proxy at $socket passed a POST; do not use it"
  fi
  [[ $out == *"$REFUSAL"* ]] || die "the proxy at $socket did not refuse a POST itself: $out"
  say "proxy at $socket: GET passes (API $("$docker_cli" -H "unix://$socket" version --format '{{.Server.APIVersion}}')), POST is refused"
}

ensure_proxy_container() {
  local sock_gid spec hash current state tmp i
  if [[ -e $socket_dir ]]; then
    [[ -d $socket_dir && ! -L $socket_dir ]] || die "--socket-dir exists and is not a directory: $socket_dir"
  else
    # Parents as mkdir -p makes them under umask 022: the login user must be able to pass through.
    (umask 022 && mkdir -p -- "$socket_dir")
  fi
  [[ $(stat -c %u -- "$socket_dir") -eq 0 ]] || die "--socket-dir must be owned by root: $socket_dir"
  [[ $(( 8#$(stat -c %a -- "$socket_dir") & 8#022 )) -eq 0 ]] ||
    die "--socket-dir must be writable by root only: $socket_dir"
  sock_gid=$(stat -c %g -- "$docker_socket")

  local -a run_args=(
    --name "$name" --restart unless-stopped --network none
    --user 0:0 --group-add "$sock_gid" --cap-drop ALL --security-opt no-new-privileges
    --memory 64m --pids-limit 32 --log-driver json-file --log-opt max-size=1m --log-opt max-file=2
    -v "$docker_socket:$docker_socket:ro" -v "$socket_dir:$socket_dir"
  )
  # Handing the socket to a user other than root takes CAP_CHOWN.
  [[ $uid -eq 0 && $gid -eq 0 ]] || run_args+=(--cap-add CHOWN)

  spec=$(printf '%s\n' "$image" "${run_args[@]}"; haproxy_config)
  hash=$(printf '%s' "$spec" | sha256sum | cut -c1-64)

  if current=$("$docker_cli" inspect --type container --format "{{index .Config.Labels \"$LABEL\"}}" "$name" 2>/dev/null); then
    if [[ $current == "$hash" ]]; then
      state=$("$docker_cli" inspect --type container --format '{{.State.Running}}' "$name")
      if [[ $state == true ]]; then
        say "unchanged: container $name"
      else
        "$docker_cli" start "$name" >/dev/null
        say "started container $name"
      fi
      return
    fi
    say "replacing container $name (its image or settings differ)"
    "$docker_cli" rm -f "$name" >/dev/null
  fi

  if ! "$docker_cli" image inspect "$image" >/dev/null 2>&1; then
    "$docker_cli" pull "$image" >/dev/null || die "cannot pull $image"
  fi
  "$docker_cli" create "${run_args[@]}" --label "$LABEL=$hash" "$image" >/dev/null
  # The config lives in the container, not on the host: it survives reboots where /etc does not
  # (Unraid), and the container's restart policy brings it back with the engine.
  tmp=$(mktemp)
  haproxy_config >"$tmp"
  chmod 0644 -- "$tmp"
  if ! "$docker_cli" cp "$tmp" "$name:$IMAGE_CONFIG"; then
    rm -f -- "$tmp"
    "$docker_cli" rm -f "$name" >/dev/null
    die "cannot copy the config into $name"
  fi
  rm -f -- "$tmp"
  "$docker_cli" start "$name" >/dev/null
  for ((i = 0; i < 50; i++)); do
    [[ -S $socket ]] && "$docker_cli" -H "unix://$socket" version >/dev/null 2>&1 && break
    sleep 0.2
  done
  say "created container $name ($image), listening on $socket"
}

if [[ $proxy_container -eq 1 ]]; then
  ensure_proxy_container
  self_test
elif [[ -S $socket ]]; then
  self_test
else
  warn "no proxy listens on $socket yet: the key works once one does"
fi

# ---- authorized_keys ---------------------------------------------------------------------------
ak_dir=${authorized_keys%/*}
if [[ ! -d $ak_dir ]]; then
  mkdir -m 0700 -- "$ak_dir"
  chown -- "$uid:$gid" "$ak_dir"
fi
if [[ ! -e $authorized_keys ]]; then
  : >"$authorized_keys"
  chmod 0600 -- "$authorized_keys"
  chown -- "$uid:$gid" "$authorized_keys"
fi

present=0
conflicts=()
while IFS= read -r match; do
  lineno=${match%%:*}
  if [[ ${match#*:} == "$entry" ]]; then
    present=$((present + 1))
  else
    conflicts+=("$lineno")
  fi
done < <(grep -n -F -- "$key_blob" "$authorized_keys" || true)

if [[ ${#conflicts[@]} -gt 0 ]]; then
  die "$authorized_keys already lists this key on line(s) ${conflicts[*]} with other options; remove them first (or use another key): nothing was changed"
fi
if [[ $present -gt 0 ]]; then
  say "unchanged: $authorized_keys already has the preview key"
else
  # Append on a line of its own, even if the file does not end in a newline.
  if [[ -s $authorized_keys && $(tail -c 1 -- "$authorized_keys" | wc -l) -eq 0 ]]; then
    printf '\n' >>"$authorized_keys"
  fi
  printf '%s\n' "$entry" >>"$authorized_keys"
  say "added the preview key to $authorized_keys"
fi

# Best effort: tell the user when sshd reads other files than this one.
if command -v sshd >/dev/null 2>&1; then
  if files=$(sshd -T -C "user=$user,host=localhost,addr=127.0.0.1" 2>/dev/null | awk '$1 == "authorizedkeysfile" { $1 = ""; print }'); then
    found=0
    home_dir=$(getent passwd "$user" 2>/dev/null | cut -d: -f6 || true)
    for f in $files; do
      f=${f//%h/$home_dir}
      f=${f//%u/$user}
      [[ $f == /* ]] || f="$home_dir/$f"
      [[ $f == "$authorized_keys" ]] && found=1
    done
    [[ -z $files || $found -eq 1 ]] ||
      warn "this host's sshd reads AuthorizedKeysFile ${files# }, not $authorized_keys"
  fi
fi
