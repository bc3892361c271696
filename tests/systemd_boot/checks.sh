#!/bin/sh
# checks.sh: runs inside the booted container (zexec-boot-check.service, as root) against the
# packages boot_test.sh put in /debs. Each check appends `ok - NAME` or `FAIL - NAME: what was
# seen` to /results/log, then a `# N passed, M failed` summary; whatever happens the container
# powers off, so the host is never left waiting for its deadline.
#
# No `set -e`: a failed check must not stop the later ones. Checks that depend on an earlier
# step (e.g. everything after a failed install) still run and fail on their own evidence, which
# says more than a skipped line would.
set -u

LOG=/results/log
SOCK=/run/zexec/zexecd.sock
CONF=/etc/zexec/zexecd.toml
export DEBIAN_FRONTEND=noninteractive
passed=0 failed=0

: >"$LOG"
finish() {
  # The poweroff below stops this unit with SIGTERM: that is not an interruption any more.
  trap - INT TERM HUP
  echo "# $passed passed, $failed failed" >>"$LOG"
  # What zexecd and systemd said, for the failures' sake (boot_test.sh prints it).
  [ "$failed" = 0 ] || journalctl --no-pager -q -o short-monotonic -n 80 -u zexecd >/results/journal 2>&1
  # --no-block: the poweroff job stops this very unit; waiting for it would wait on ourselves.
  systemctl --no-block poweroff
}
trap finish EXIT
trap 'echo "FAIL - checks.sh: interrupted" >>"$LOG"; failed=$((failed + 1)); exit 1' INT TERM HUP

ok() { echo "ok - $1" >>"$LOG"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1: $2" >>"$LOG"; failed=$((failed + 1)); }
note() { echo "# $*" >>"$LOG"; }
# check NAME SEEN CMD...: ok when CMD succeeds, else FAIL with SEEN (what was observed, taken
# before CMD runs; the polling checks below say what they saw after their deadline instead).
check() {
  name=$1 seen=$2
  shift 2
  if "$@"; then ok "$name"; else fail "$name" "$seen"; fi
}

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds (0) or the deadline passes (1).
wait_for() {
  end=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.1
  done
}

prop() { systemctl show -p "$1" --value zexecd; }
is() { [ "$(prop "$1")" = "$2" ]; }
# The default pool's size as `zexec status` prints it (the first row under the pool header).
pool_workers() { zexec status 2>/dev/null | awk 'p { print $2; exit } $1 == "pool" && $2 == "workers" { p = 1 }'; }
submit_42() { [ "$(timeout 20 zexec submit echo 42 2>&1)" = 42 ]; }

# ---- install: apt resolves the Depends (no network needed for what the tree already has) ----
# Recommends are left out: this test is about what the packages need (Depends); the four
# packages recommend each other, and all of them are on the command line anyway.
debs='' names=''
for f in /debs/*.deb; do
  [ -f "$f" ] || continue
  debs="$debs $f" names="$names $(dpkg-deb -f "$f" Package)"
done
note "debs:$debs"
if [ -z "$debs" ]; then
  fail "apt-get install /debs/*.deb" "no .deb in /debs"
else
  # shellcheck disable=SC2086  # one word per .deb
  out=$(apt-get install -y -q --no-install-recommends $debs 2>&1)
  rc=$?
  missing=
  for p in $names; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing="$missing $p"
  done
  if [ "$rc" = 0 ] && [ -z "$missing" ]; then
    ok "apt-get install /debs/*.deb"
  else
    fail "apt-get install /debs/*.deb" "exit $rc, not installed:${missing:- (none)}; $(echo "$out" | tail -n 5 | tr '\n' ' ')"
  fi
fi
note "installed:$names"

# ---- the package started it, as Debian does for a daemon (dh_installsystemd) ----
check "installed: zexecd enabled" "is-enabled: $(systemctl is-enabled zexecd 2>&1)" \
  [ "$(systemctl is-enabled zexecd 2>&1)" = enabled ]
check "installed: zexecd running" "is-active: $(systemctl is-active zexecd)" [ "$(systemctl is-active zexecd)" = active ]

# ---- the service, as Type=notify ----
# From stopped, so that `enable --now` really has to wait for READY=1.
systemctl stop zexecd >/dev/null 2>&1
out=$(systemctl enable --now zexecd 2>&1)
rc=$?
# Type=notify: `enable --now` returns only after READY=1, so both must hold at once, no retry.
sock_now=no; [ -S "$SOCK" ] && sock_now=yes
status_out=$(timeout 10 zexec status 2>&1)
status_rc=$?
check "systemctl enable --now zexecd" "exit $rc: $out" [ "$rc" = 0 ]
check "socket $SOCK exists when enable --now returns" "no socket (ls: $(ls -la /run/zexec 2>&1 | tr '\n' ' '))" \
  [ "$sock_now" = yes ]
check "zexec status succeeds when enable --now returns" "exit $status_rc: $(echo "$status_out" | head -n 3 | tr '\n' ' ')" \
  [ "$status_rc" = 0 ]
check "zexecd is active" "is-active: $(systemctl is-active zexecd)" [ "$(systemctl is-active zexecd)" = active ]
check "Type=notify" "Type=$(prop Type)" is Type notify
check "NotifyAccess=main" "NotifyAccess=$(prop NotifyAccess)" is NotifyAccess main
check "StatusText set (STATUS=)" "StatusText empty" [ -n "$(prop StatusText)" ]
note "StatusText: $(prop StatusText)"
check "WatchdogUSec=30s" "WatchdogUSec=$(prop WatchdogUSec)" is WatchdogUSec 30s
pid=$(prop MainPID)
# Armed for this process: systemd hands the interval to the main process in its environment.
env_wd=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep '^WATCHDOG_USEC=')
check "WATCHDOG_USEC=30000000 in the main process's environment" "${env_wd:-no WATCHDOG_USEC} (MainPID $pid)" \
  [ "$env_wd" = WATCHDOG_USEC=30000000 ]
# And pinged: systemd stamps WatchdogTimestamp at each WATCHDOG=1 (and at start); a ping is
# due within half the interval (15 s), so the stamp must move within 20 s.
wd0=$(prop WatchdogTimestampMonotonic)
pinged() { wd=$(prop WatchdogTimestampMonotonic) && [ "$wd" != "$wd0" ] && [ "$wd" != 0 ]; }
name="watchdog pinged (WatchdogTimestampMonotonic moves within 20 s)"
if wait_for 20 pinged; then ok "$name"; else fail "$name" "stayed $wd0 ($(prop WatchdogTimestamp))"; fi
uid=$(awk '$1 == "Uid:" { print $2 }' "/proc/$pid/status" 2>/dev/null)
want_uid=$(getent passwd zexec | cut -d: -f3)
check "main process runs as user zexec" "Uid ${uid:-?} of MainPID $pid, zexec is ${want_uid:-missing}" \
  test -n "$want_uid" -a "$uid" = "$want_uid"
sock_st=$(stat -c '%G %A' "$SOCK" 2>&1)
check "socket group zexec, mode srwxrwx---" "$sock_st" [ "$sock_st" = "zexec srwxrwx---" ]

# ---- tasks ----
out=$(timeout 20 zexec submit echo 42 2>&1)
rc=$?
check "zexec submit echo 42 prints 42" "exit $rc, printed: $out" [ "$out" = 42 ]
out=$(timeout 20 /usr/bin/python3 -c '
import zexec
with zexec.Executor("ipc:///run/zexec/zexecd.sock") as ex:
    print(ex.submit("echo", 42).result(timeout=10))
' 2>&1)
rc=$?
check "python3 zexec.Executor: echo(42) returns 42" "exit $rc: $(echo "$out" | tail -n 3 | tr '\n' ' ')" [ "$out" = 42 ]

# ---- the journal: a restart (an upgrade's) loses no task and the producer rides through ----
jst=$(stat -c '%U %a' /var/lib/zexec/journal 2>&1)
check "journal /var/lib/zexec/journal, owned by zexec" "$jst" [ "${jst%% *}" = zexec ]
out=$(timeout 60 /usr/bin/python3 -c '
import subprocess, zexec
with zexec.Executor("ipc:///run/zexec/zexecd.sock") as ex:
    fs = [ex.submit("sleep", 0.2) for _ in range(20)]
    fs[0].result(timeout=10)
    subprocess.run(["systemctl", "restart", "zexecd"], check=True)
    print(sum(f.result(timeout=30) == 0.2 for f in fs))
' 2>&1)
rc=$?
check "20 tasks through systemctl restart zexecd: all 20 succeed" "exit $rc: $(echo "$out" | tail -n 3 | tr '\n' ' ')" \
  [ "$(echo "$out" | tail -n 1)" = 20 ]

# ---- a crash: systemd restarts it ----
pid=$(prop MainPID)
n0=$(prop NRestarts)
# The shell's kill (minbase has no procps): a SIGKILL nothing in zexecd can catch or tidy up.
kill -KILL "$pid" 2>/dev/null
restarted() {
  new=$(prop MainPID)
  is NRestarts 1 && [ "$new" != 0 ] && [ "$new" != "$pid" ] && [ "$(systemctl is-active zexecd)" = active ]
}
name="SIGKILL: restarted (NRestarts 1, new MainPID, active) within 20 s"
if wait_for 20 restarted; then ok "$name"; else
  fail "$name" "NRestarts $n0 -> $(prop NRestarts), MainPID $pid -> $(prop MainPID), $(systemctl is-active zexecd)"
fi
name="SIGKILL: a CLI task works after the restart (within 20 s)"
if wait_for 20 submit_42; then ok "$name"; else
  fail "$name" "zexec submit echo 42: $(timeout 20 zexec submit echo 42 2>&1 | tail -n 1)"
fi

# ---- reload re-reads the configuration ----
# `workers` is live on SIGHUP (daemon/src/options.cpp) and `zexec status` prints the pool size.
pid=$(prop MainPID)
w0=$(pool_workers)
case $w0 in '' | *[!0-9]*) w0=unknown w1=2 ;; *) w1=$((w0 + 1)) ;; esac
# Top-level keys come before the first [table]: ours on line 1, any other `workers =` up to
# the first table dropped (the inserted line is not in sed's pattern space, so it stays).
sed -i -e "1i workers = $w1" -e '1,/^\[/{/^[[:space:]]*workers[[:space:]]*=/d}' "$CONF"
out=$(systemctl reload zexecd 2>&1)
rc=$?
check "systemctl reload zexecd" "exit $rc: $out" [ "$rc" = 0 ]
reloaded() { [ "$w0" != unknown ] && [ "$(pool_workers)" = "$w1" ]; }
name="reload: zexec status shows the default pool's workers $w0 -> $w1 within 10 s"
if wait_for 10 reloaded; then ok "$name"; else fail "$name" "pool workers $(pool_workers)"; fi
same_process() { [ "$pid" != 0 ] && is MainPID "$pid"; }
check "reload: same process, not a restart" "MainPID $pid before, $(prop MainPID) after" same_process

# ---- an upgrade's path: the package installed again restarts the daemon (postinst with the
# old version: restart, not start), which drains and comes back serving ----
pid=$(prop MainPID)
zexec_deb=$(ls /debs/zexec_*.deb 2>/dev/null | head -n 1)
out=$(apt-get install -y -q --reinstall --no-install-recommends "$zexec_deb" 2>&1)
rc=$?
check "apt-get install --reinstall zexec" "exit $rc: $(echo "$out" | tail -n 5 | tr '\n' ' ')" [ "$rc" = 0 ]
upgraded() {
  new=$(prop MainPID)
  [ "$new" != 0 ] && [ "$new" != "$pid" ] && [ "$(systemctl is-active zexecd)" = active ] && submit_42
}
name="reinstall: restarted (new MainPID, active) and serving within 20 s"
if wait_for 20 upgraded; then ok "$name"; else
  fail "$name" "MainPID $pid -> $(prop MainPID), $(systemctl is-active zexecd)"
fi
check "reinstall: the configuration edited above kept (conffile)" "$(head -n 2 "$CONF" | tr '\n' ' ')" \
  grep -q "^workers = $w1\$" "$CONF"

# ---- stop drains and exits 0 ----
out=$(systemctl stop zexecd 2>&1)
rc=$?
check "systemctl stop zexecd" "exit $rc: $out" [ "$rc" = 0 ]
stopped_clean() { [ "$(systemctl is-active zexecd)" = inactive ] && is Result success && is ExecMainStatus 0; }
check "stop: inactive, Result=success, ExecMainStatus=0" \
  "$(systemctl is-active zexecd), Result=$(prop Result), ExecMainCode=$(prop ExecMainCode), ExecMainStatus=$(prop ExecMainStatus)" \
  stopped_clean

# ---- remove: the daemon goes, the configuration stays ----
systemctl start zexecd >/dev/null 2>&1
pid=$(prop MainPID)
check "started again before remove" "$(systemctl is-active zexecd), MainPID $pid" \
  [ "$(systemctl is-active zexecd)" = active ]
out=$(apt-get remove -y -q zexec 2>&1)
rc=$?
check "apt-get remove zexec" "exit $rc: $(echo "$out" | tail -n 5 | tr '\n' ' ')" [ "$rc" = 0 ]
gone() { [ "$(systemctl is-active zexecd)" != active ] && { [ "$pid" = 0 ] || [ ! -d "/proc/$pid" ]; }; }
check "remove: zexecd no longer running" \
  "is-active $(systemctl is-active zexecd), LoadState $(prop LoadState), /proc/$pid $([ -d "/proc/$pid" ] && echo exists || echo gone)" \
  gone
check "remove: $CONF kept (conffile)" "$(ls -la /etc/zexec 2>&1 | tr '\n' ' ')" [ -f "$CONF" ]

# ---- purge: configuration and state go ----
out=$(apt-get purge -y -q zexec 2>&1)
rc=$?
check "apt-get purge zexec" "exit $rc: $(echo "$out" | tail -n 5 | tr '\n' ' ')" [ "$rc" = 0 ]
check "purge: /etc/zexec removed" "still there: $(ls -A /etc/zexec 2>&1 | tr '\n' ' ')" [ ! -e /etc/zexec ]
check "purge: /var/lib/zexec (StateDirectory) removed" "still there: $(ls -la /var/lib/zexec 2>&1 | head -n 3 | tr '\n' ' ')" \
  [ ! -e /var/lib/zexec ]
