#!/usr/bin/env bash
#@params
#@ One PreflightSpec, with sample values; the renderer drops this block and writes each value,
#@ quoted, where it is used. A list holds one sample item here; [a], [dir] [owner] and
#@ [store] [need_kib] [need_gib] are the items the #@for blocks below bind.
declare -A P=(
  [host]=unraid
  [stack_label]=pulumi/unraid  # org.octollm.managed-by on this stack's containers and networks
  [min_docker]=20.10
  [wanted]=octollm=172.28.0.0/24  # list of name=subnet
  [nets]=1  # list of (name, subnet, gateway, internal, reserved); [nname] ... [nreserved] is one
  [nname]=octollm
  [nsubnet]=172.28.0.0/24
  [ngateway]=172.28.0.1
  [ninternal]=false  # true or false, as docker prints it
  [nreserved]=continue-dev=172.28.0.12  # who=address ..., sorted by who (docker's order); empty: none
  [paths]=1  # whether there are anchors or dirs (empty: no)
  [anchors]=/mnt/user/appdata  # list; [a] is one: a directory that must already exist
  [a]=/mnt/user/appdata
  [dirs]=/mnt/user/appdata/octollm  # list of (path, uid:gid); [dir] [owner] is one
  [dir]=/mnt/user/appdata/octollm
  [owner]=99:100
  [disk]=/mnt/user/appdata/octollm/models  # list of (path, KiB, GiB); [store] [need_kib] [need_gib] is one
  [store]=/mnt/user/appdata/octollm/models
  [need_kib]=27262976  # int
  [need_gib]=26  # int, rounded up
  [expected]='Tesla P40=24576'  # list of model=VRAM MiB
  [gfail]=fail  # fail, or warn where the GPU checks only warn (allowCpuFallback)
  [min_driver]=525.60  # empty: no driver check
  [driver_reason]='CUDA 12.0 needs (image ollama/ollama:0.12.6 of ollama)'
  [gpu_image]=ollama/ollama:0.12.6  # empty: no container GPU check
  [ports]=11434  # list of ints
  [ssh_parallel]=8  # int; 0: the host is not reached over SSH
  [swap_limit]=1  # int; 1: containers get memory_swap = memory (hosts.<h>.swapLimit), 0: -1
)
#@end
set -uo pipefail
host="${P[host]}"
stack_label="${P[stack_label]}"
failures=()
warnings=()
fail() { failures+=("$1"); }
warn() { warnings+=("$1"); }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
ip2int() { local a b c d; IFS=. read -r a b c d <<<"$1"; echo $(( (a << 24) | (b << 16) | (c << 8) | d )); }
cidr_range() {
  local ip="${1%/*}" bits="${1#*/}" n size
  n=$(ip2int "$ip"); size=$(( 1 << (32 - bits) ))
  echo "$(( n / size * size )) $(( n / size * size + size - 1 ))"
}
overlaps() {
  local s1 e1 s2 e2
  read -r s1 e1 <<<"$(cidr_range "$1")"; read -r s2 e2 <<<"$(cidr_range "$2")"
  [ "$s1" -le "$e2" ] && [ "$s2" -le "$e1" ]
}
nearest_existing() { local p="$1"; while [ ! -e "$p" ]; do p="$(dirname -- "$p")"; done; echo "$p"; }

# Docker engine
docker_ok=0
if ! command -v docker >/dev/null 2>&1; then
  fail "the docker CLI is not installed"
elif ! server=$(docker version --format '{{.Server.Version}}' 2>&1); then
  fail "the Docker engine does not answer: ${server##*$'\n'}"
else
  docker_ok=1
#@ Config values reach messages through quoted variables, never inside a "..." string.
  min_docker="${P[min_docker]}"
  if ! version_ge "${server%%[+-]*}" "$min_docker"; then
    fail "Docker engine $server is older than $min_docker, the oldest this program supports"
  fi
#@ Containers are created with memory_swap = memory (no swap past the limit), or -1 where the config
#@ says the engine has no swap accounting. Such an engine stores -1 whatever it is sent, so with
#@ memory_swap = memory every `up` would show memorySwap changing on every container.
  swap_limit="${P[swap_limit]}"
  swap_accounting=$(docker info --format '{{.SwapLimit}}' 2>/dev/null)
  if [ "$swap_limit" = 1 ] && [ "$swap_accounting" = false ]; then
    fail "the Docker engine has no swap limit support (cgroup swap accounting is off): it keeps memorySwap -1 on every container, so every pulumi up would show memorySwap changing; set hosts.$host.swapLimit: false in the stack config (swap is then not limited), or turn swap accounting on (swapaccount=1 on cgroup v1)"
  elif [ "$swap_limit" = 0 ] && [ "$swap_accounting" = true ]; then
    warn "hosts.$host.swapLimit is false but the Docker engine has swap limit support: containers may swap without limit; set it to true to cap swap at the memory limit"
  fi
fi
#@if wanted

# Networks: no foreign network may already use a subnet or name this stack wants
wanted=("${P[wanted]}")
if [ "$docker_ok" = 1 ]; then
  while IFS='|' read -r name label subnets; do
    [ -n "$name" ] || continue
    [ "$label" = "$stack_label" ] && continue
    for want in "${wanted[@]}"; do
      wname="${want%%=*}"; wsubnet="${want#*=}"
      if [ "$name" = "$wname" ]; then
        fail "a Docker network named $name already exists and is not managed by this stack"
      fi
      for s in $subnets; do
        case "$s" in *:*) continue ;; esac
        if overlaps "$s" "$wsubnet"; then
          fail "Docker network $name already uses $s, which overlaps $wsubnet wanted for $wname"
        fi
      done
    done
  done < <(docker network ls -q | xargs -r docker network inspect --format '{{.Name}}|{{index .Labels "org.octollm.managed-by"}}|{{range .IPAM.Config}}{{.Subnet}} {{end}}')
fi
#@end
#@if nets

# Networks this update replaces: every setting of a Docker network is ForceNew and its name is
# fixed, so a changed subnet, gateway, internal flag or reserved address deletes the network (after
# this stack's containers on it) and creates it again. The engine refuses to remove a network that
# any container is still attached to, and one outside this stack (a client given a reserved
# address, a container llm-manager started) would stop the update halfway, with this stack's
# containers on that network already removed. So that is found here, before anything changes.
replaced_network() {
  local name="$1" subnet="$2" gateway="$3" internal="$4" reserved="$5"
  local have label hsubnet hgateway hinternal hreserved hattached clabel c msg
  local changed=() attached=() foreign=()
#@ AuxAddress is a map; text/template ranges over it in key order, as the renderer sorts `reserved`.
  have=$(docker network inspect --format '{{index .Labels "org.octollm.managed-by"}}|{{range .IPAM.Config}}{{.Subnet}} {{end}}|{{range .IPAM.Config}}{{.Gateway}} {{end}}|{{.Internal}}|{{range .IPAM.Config}}{{range $k, $v := .AuxAddress}}{{$k}}={{$v}} {{end}}{{end}}|{{range .Containers}}{{.Name}} {{end}}' -- "$name" 2>/dev/null) || return 0  # absent: only created
  IFS='|' read -r label hsubnet hgateway hinternal hreserved hattached <<<"$have"
  [ "$label" = "$stack_label" ] || return 0  # not this stack's: the name check above reports it
  read -r hsubnet <<<"$hsubnet"; read -r hgateway <<<"$hgateway"; read -r hreserved <<<"$hreserved"
  [ "$hsubnet" = "$subnet" ] || changed+=("subnet $hsubnet -> $subnet")
  [ "$hgateway" = "$gateway" ] || changed+=("gateway $hgateway -> $gateway")
  [ "$hinternal" = "$internal" ] || changed+=("internal $hinternal -> $internal")
  [ "$hreserved" = "$reserved" ] || changed+=("reserved addresses ${hreserved:-none} -> ${reserved:-none}")
  [ "${#changed[@]}" -gt 0 ] || return 0
  read -ra attached <<<"$hattached"
  for c in "${attached[@]}"; do
    clabel=$(docker container inspect --format '{{index .Config.Labels "org.octollm.managed-by"}}' -- "$c" 2>/dev/null) || continue  # gone meanwhile
    [ "$clabel" = "$stack_label" ] || foreign+=("$c")
  done
  [ "${#foreign[@]}" -gt 0 ] || return 0
  msg="Docker network $name is replaced by this update ($(printf '%s, ' "${changed[@]}" | sed 's/, $//')), but container(s) ${foreign[*]} outside this stack are attached to it, and the engine refuses to remove a network with active endpoints. Disconnect them first (a container llm-manager started can be stopped instead), and connect them again after the update:"
  for c in "${foreign[@]}"; do msg+=$'\n'"      docker network disconnect $name $c"; done
  fail "$msg"
}
if [ "$docker_ok" = 1 ]; then
#@for nname, nsubnet, ngateway, ninternal, nreserved in nets
  replaced_network "${P[nname]}" "${P[nsubnet]}" "${P[ngateway]}" "${P[ninternal]}" "${P[nreserved]}"
#@end
fi
#@end
#@if paths

# Host paths
#@for a in anchors
a="${P[a]}"
if [ ! -d "$a" ]; then
  fail "$a does not exist (is the pool or array that holds it mounted?)"
fi
#@end
#@for dir, owner in dirs
p="${P[dir]}"
owner="${P[owner]}"
if [ -e "$p" ]; then
  if [ ! -d "$p" ]; then
    fail "$p exists but is not a directory"
  elif [ "$(stat -c %u:%g -- "$p")" != "$owner" ] && [ "$(id -u)" != 0 ]; then
    fail "$p is owned by $(stat -c %u:%g -- "$p"), not $owner, and this user cannot change that"
  fi
else
  anc="$(nearest_existing "$p")"
  if [ ! -w "$anc" ]; then
    fail "$p does not exist and cannot be created: $anc is not writable by $(id -un)"
  fi
fi
#@end
#@end
#@if disk

# Free disk at each model store
#@for store, need_kib, need_gib in disk
p="${P[store]}"
anc="$(nearest_existing "$p")"
# Numbers only (awk's +0): du and df print the path, which may span lines, and $(( )) evaluates any
# name[...] it is given, running a $(...) in the subscript.
free=$(df -Pk -- "$anc" | awk 'NR==2 {print $4 + 0}')
have=0
if [ -d "$p" ]; then have=$(du -sk -- "$p" 2>/dev/null | awk 'NR==1 {print $1 + 0}'); fi
if [ $(( free + have )) -lt "${P[need_kib]}" ]; then
  fail "$p: $(( (free + have) / 1048576 )) GiB free for models that need ${P[need_gib]} GiB"
fi
#@end
#@end
#@if expected

# GPUs
expected=("${P[expected]}")
if ! command -v nvidia-smi >/dev/null 2>&1; then
  "${P[gfail]}" "nvidia-smi not found: the config declares ${#expected[@]} GPU(s) but no NVIDIA driver is installed"
else
  mapfile -t rows < <(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits 2>&1)
  if [ "${#rows[@]}" -ne "${#expected[@]}" ]; then
    "${P[gfail]}" "nvidia-smi reports ${#rows[@]} GPU(s), the config declares ${#expected[@]}"
  fi
  for i in "${!expected[@]}"; do
    [ "$i" -lt "${#rows[@]}" ] || break
    want="${expected[$i]}"; wmodel="${want%=*}"; wmib="${want##*=}"
    IFS=',' read -r name mib driver <<<"${rows[$i]}"
    name="${name# }"; mib="${mib// /}"; driver="${driver// /}"
    if ! [ "$mib" -eq "$mib" ] 2>/dev/null; then
      "${P[gfail]}" "GPU $i: nvidia-smi failed: ${rows[$i]}"
      continue
    fi
    if [ "$mib" -lt $(( wmib * 9 / 10 )) ]; then
      "${P[gfail]}" "GPU $i ($name) has $mib MiB of VRAM; the config declares $wmodel with $wmib MiB"
    fi
    #@if min_driver
    min_driver="${P[min_driver]}"; driver_reason="${P[driver_reason]}"
    if ! version_ge "$driver" "$min_driver"; then
      "${P[gfail]}" "GPU $i ($name): driver $driver is older than $min_driver, which $driver_reason"
    fi
    #@end
  done
  #@if gpu_image
  if [ "$docker_ok" = 1 ]; then
    if ! out=$(docker run --rm --gpus all --entrypoint nvidia-smi "${P[gpu_image]}" -L 2>&1); then
      "${P[gfail]}" "Docker cannot hand the GPU to a container (is nvidia-container-toolkit installed and the daemon restarted?): ${out##*$'\n'}"
    fi
  fi
  #@end
fi
#@end
#@if ports

# Host ports: free, or published by this stack's own containers
ports=("${P[ports]}")
held=""
if [ "$docker_ok" = 1 ]; then
  held=$(docker ps --format '{{.Names}}|{{.Label "org.octollm.managed-by"}}|{{.Ports}}')
fi
listening=""
if command -v ss >/dev/null 2>&1; then listening=$(ss -Hltn 2>/dev/null | awk '{print $4}'); fi
for port in "${ports[@]}"; do
  owner=""
  while IFS='|' read -r cname clabel cports; do
    case ",$cports" in *":$port->"*) owner="$cname|$clabel" ;; esac
  done <<<"$held"
  if [ -n "$owner" ]; then
    if [ "${owner#*|}" != "$stack_label" ]; then
      fail "port $port is already published by container ${owner%%|*}, which this stack does not manage"
    fi
  elif printf '%s\n' "$listening" | grep -Eq "[:.]$port\$"; then
    fail "port $port is already in use by a process on the host"
  fi
done
#@end
#@if ssh_parallel

# sshd limits: this stack runs up to ${P[ssh_parallel]} SSH operations at once on the host. With
# connection sharing the Docker API calls are sessions on one connection (MaxSessions), and
# each remote command, and the shared connection itself, is a new connection that counts
# against MaxStartups (start:rate:full) until it has logged in.
ssh_parallel="${P[ssh_parallel]}"
sshd_config="${OCTOLLM_SSHD_CONFIG:-/etc/ssh/sshd_config}"
sshd_dir="$(dirname -- "$sshd_config")"
sshd_lines() {  # a config file's lines, with its Include files expanded where they appear
  local line kw rest pat file pats
  [ "$2" -lt 16 ] && [ -r "$1" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    read -r kw rest <<<"${line/=/ }"
    if [ "${kw,,}" = include ]; then
      read -ra pats <<<"$rest"
      for pat in "${pats[@]}"; do
        case "$pat" in /*) ;; *) pat="$sshd_dir/$pat" ;; esac  # relative to the config directory
#@ in name order, as sshd's glob(3) gives them
        while IFS= read -r file; do sshd_lines "$file" $(( $2 + 1 )); done < <(compgen -G "$pat" | LC_ALL=C sort)
      done
    else
      printf '%s\n' "$line"
    fi
  done < "$1"
}
sshd_first() {  # the first global value of a keyword, as sshd takes it
  sshd_lines "$sshd_config" 0 | awk -v key="$1" '
    { sub(/^[ \t]+/, ""); sub(/=/, " ") }  # Keyword=value and Keyword value alike
    /^#/ || NF == 0 { next }
    tolower($1) == "match" { in_match = 1; next }
    !in_match && tolower($1) == key { print $2; exit }'
}
max_startups=""; max_sessions=""; sshd_source=""
sshd_bin="$(command -v sshd || true)"
if [ -z "$sshd_bin" ] && [ -x /usr/sbin/sshd ]; then sshd_bin=/usr/sbin/sshd; fi
if [ -n "$sshd_bin" ] && effective=$("$sshd_bin" -T -f "$sshd_config" 2>/dev/null); then
  max_startups=$(awk '$1 == "maxstartups" {print $2; exit}' <<<"$effective")
  max_sessions=$(awk '$1 == "maxsessions" {print $2; exit}' <<<"$effective")
  sshd_source="sshd -T"
elif [ -r "$sshd_config" ]; then
  max_startups=$(sshd_first maxstartups)
  max_sessions=$(sshd_first maxsessions)
  sshd_source="$sshd_config"
  if [ -z "$max_startups" ] || [ -z "$max_sessions" ]; then sshd_source="$sshd_config, OpenSSH defaults"; fi
  max_startups="${max_startups:-10:30:100}"
  max_sessions="${max_sessions:-10}"
fi
if [ -z "$sshd_source" ]; then
  echo "sshd: MaxStartups unknown, MaxSessions unknown (sshd -T failed and $sshd_config is not readable)"
else
  echo "sshd: MaxStartups $max_startups, MaxSessions $max_sessions (from $sshd_source)"
  start="${max_startups%%:*}"
  if [[ "$start" =~ ^[0-9]+$ ]] && [ "$start" -lt "$ssh_parallel" ]; then
    warn "sshd MaxStartups $max_startups starts dropping new connections at $start, below the $ssh_parallel SSH operations this stack runs at once (connections get reset); raise it, e.g. MaxStartups $(( ssh_parallel + 2 )):30:100, or lower pulumi --parallel"
  fi
  if [[ "$max_sessions" =~ ^[0-9]+$ ]] && [ "$max_sessions" -lt "$ssh_parallel" ]; then
    warn "sshd MaxSessions $max_sessions is below the $ssh_parallel Docker API calls this stack runs at once on one shared connection (calls beyond it are refused); raise it, e.g. MaxSessions $ssh_parallel, or lower pulumi --parallel"
  fi
fi
#@end

for w in "${warnings[@]}"; do echo "warning: $host: $w"; done
if [ "${#failures[@]}" -gt 0 ]; then
  {
    echo "preflight failed on host $host (${#failures[@]} problem(s)):"
    for f in "${failures[@]}"; do echo "  - $f"; done
  } >&2
  exit 1
fi
echo "preflight ok on host $host"
