#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
#@ With install, the job's script arrives on stdin.
declare -A P=(
  [job]=octollm-backup-unraid  # the name of the timer, the service and the cron file
  [description]='octollm-infra backups of stack unraid'
  [calendar]='*-*-* 03:30:00'  # systemd OnCalendar
  [cron]='30 3 * * *'  # the same times, as a cron expression
  [script_path]=/mnt/user/appdata/octollm/jobs/octollm-backup-unraid.sh
  [exec_start]='/bin/bash /mnt/user/appdata/octollm/jobs/octollm-backup-unraid.sh'  # the service's ExecStart=
  # cron only: the crontab line, its command already quoted for the /bin/sh cron runs it with (the log
  # holds the last run's output)
  [cron_line]="30 3 * * * /bin/bash /mnt/user/appdata/octollm/jobs/octollm-backup-unraid.sh > /mnt/user/appdata/octollm/jobs/octollm-backup-unraid.log 2>&1"
  [install]=1  # install (or update) the job (empty: no)
  [remove]=''  # remove the job and its script; never what the job wrote (empty: no)
)
#@end
#@ Runs a script on a schedule on a Docker host: a systemd timer where systemd runs the host, and on
#@ Unraid (no systemd) a cron file in /boot/config/plugins/dynamix, which Unraid's update_cron merges
#@ into root's crontab now and at every boot. OCTOLLM_SYSTEM_ROOT points the system paths elsewhere
#@ (the tests use a scratch directory).
set -euo pipefail

root="${OCTOLLM_SYSTEM_ROOT:-}"
name="${P[job]}"
script="${P[script_path]}"
if [ -e "$root/etc/unraid-version" ]; then
  mode=unraid
  cron_file="$root/boot/config/plugins/dynamix/$name.cron"
elif [ -d "$root/run/systemd/system" ]; then
  mode=systemd
  if [ "$(id -u)" = 0 ]; then
    unit_dir="$root/etc/systemd/system"
    ctl=(systemctl)
  else
    unit_dir="$HOME/.config/systemd/user"
    ctl=(systemctl --user)
  fi
else
  echo "this host runs neither systemd nor Unraid: nothing here can run $name on a schedule" >&2
  exit 1
fi

#@if install
calendar="${P[calendar]}"
description="${P[description]}"
exec_start="${P[exec_start]}"
if [ "$mode" = systemd ] && [ "$(id -u)" != 0 ] &&
   [ "$(loginctl show-user "$(id -un)" -p Linger --value 2>/dev/null || true)" != yes ]; then
  echo "$(id -un) is not root, and a user timer runs only while that user is logged in unless lingering is on:" \
       "run 'sudo loginctl enable-linger $(id -un)' on the host, or deploy as root" >&2
  exit 1
fi
if [ "$mode" = systemd ] && command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze calendar -- "$calendar" >/dev/null
fi
mkdir -p -- "$(dirname -- "$script")"
tmp="$(mktemp "$script.XXXXXX")"
cat > "$tmp"
bash -n "$tmp"
chmod 0700 "$tmp"
mv -f -- "$tmp" "$script"
case "$mode" in
  systemd)
    mkdir -p -- "$unit_dir"
    printf '%s\n' "[Unit]" "Description=$description" "Wants=docker.service" "After=docker.service" "" \
      "[Service]" "Type=oneshot" "ExecStart=$exec_start" "Nice=10" "IOSchedulingClass=idle" \
      > "$unit_dir/$name.service"
    printf '%s\n' "[Unit]" "Description=$description (schedule)" "" \
      "[Timer]" "OnCalendar=$calendar" "Persistent=true" "" "[Install]" "WantedBy=timers.target" \
      > "$unit_dir/$name.timer"
    "${ctl[@]}" daemon-reload
    "${ctl[@]}" enable --now "$name.timer" >/dev/null 2>&1 || "${ctl[@]}" enable --now "$name.timer"
    echo "installed: systemd timer $name.timer (OnCalendar=$calendar) running $script"
    ;;
  unraid)
    mkdir -p -- "$(dirname -- "$cron_file")"
    # dcron's format: no user column (the jobs run as root); the log holds the last run's output.
    cron="${P[cron]}"
    printf '%s\n' "# $description: installed by pulumi up, removed by pulumi destroy" \
      "${P[cron_line]}" > "$cron_file.tmp"
    mv -f -- "$cron_file.tmp" "$cron_file"
    "$root/usr/local/sbin/update_cron"
    echo "installed: cron entry $cron in $cron_file running $script"
    ;;
esac
#@end
#@if remove
case "$mode" in
  systemd)
    "${ctl[@]}" disable --now "$name.timer" >/dev/null 2>&1 || true
    rm -f -- "$unit_dir/$name.timer" "$unit_dir/$name.service"
    "${ctl[@]}" daemon-reload
    ;;
  unraid)
    rm -f -- "$cron_file"
    "$root/usr/local/sbin/update_cron"
    ;;
esac
rm -f -- "$script"
echo "removed $name and its script; what it wrote stays"
#@end
