#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, from official sources, for the tests/k8s tier:
# etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and the
# kubelet (built by scripts/k8s-build.sh from the k8s.io/kubernetes module, cached by version) on containerd
# and runc (Debian's packages). No Docker engine, no registry: images are loaded into containerd directly.
#
# Usage: scripts/k8s.sh up       start what is not running, wait until the node is Ready, write $K8S_DIR/env
#        scripts/k8s.sh down     stop exactly what `up` started, and undo its network changes
#        scripts/k8s.sh status   exit 0 only if every component runs
#        scripts/k8s.sh load NAME...   load the project's images (scripts/images.sh) into the node's containerd
#        scripts/k8s.sh kubectl ARGS   kubectl against this cluster
# Env:   K8S_DIR (<repo>/.k8s), K8S_VERSION (see k8s-build.sh), K8S_POD_CIDR (10.244.0.0/24),
#        K8S_SERVICE_CIDR (10.96.0.0/24), K8S_START_TIMEOUT (120).
#
# Network: pods live in network namespaces that containerd creates on a bridge that this script creates
# (ca-br0, the first address of the pod range). Pods reach the host, and so a Kafka and Redis that listen on
# that address, through it. Nothing is routed beyond the pod and service ranges: forwarding is turned on for
# them only, and every other forwarded packet from the pod range is dropped. See docs/kubernetes.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_DIR="${K8S_DIR:-$ROOT/.k8s}"
mkdir -p "$K8S_DIR"
K8S_DIR="$(cd "$K8S_DIR" && pwd)"
BIN="$("$ROOT/scripts/k8s-build.sh" --print-bin)"
POD_CIDR="${K8S_POD_CIDR:-10.244.0.0/24}"
SERVICE_CIDR="${K8S_SERVICE_CIDR:-10.96.0.0/24}"
NODE_IP="${POD_CIDR%.*/*}.1"                    # 10.244.0.1: the bridge, the node, and the host seen from pods
API_SERVICE_IP="${SERVICE_CIDR%.*/*}.1"
BRIDGE=ca-br0
NODE=ca-node
START_TIMEOUT="${K8S_START_TIMEOUT:-120}"
PKI="$K8S_DIR/pki"
LOGS="$K8S_DIR/logs"
RUN="$K8S_DIR/run"
CTRD_SOCK="$K8S_DIR/containerd/containerd.sock"
KUBECONFIG_FILE="$K8S_DIR/kubeconfig"
COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
PAUSE_REF="$("$ROOT/scripts/images.sh" ref pause)"

say() { echo "k8s: $*" >&2; }
die() { echo "k8s: error: $*" >&2; exit 1; }

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# ---- prerequisites ------------------------------------------------------------------------------

need_packages() {
  "$ROOT/scripts/need-debs.sh" etcd:etcd-server containerd:containerd runc:runc iptables:iptables \
    conntrack:conntrack openssl:openssl gcc:gcc /usr/lib/cni/bridge:containernetworking-plugins
}

# ---- process bookkeeping (as scripts/stack.sh: pidfiles, command line checked) -------------------

ours() {
  local cmd
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$2/cmdline")" || return 1
  [[ "$cmd" == *"$K8S_DIR"* ]]   # every component is started with a path under K8S_DIR
}

running() {
  local pid
  pid="$(cat "$RUN/$1.pid" 2>/dev/null)" && [[ -n "$pid" ]] && ours "$1" "$pid" && echo "$pid"
}

# spawn NAME CMD...: start CMD in its own session, log to $LOGS/NAME.log, pid to $RUN/NAME.pid.
spawn() {
  local name="$1"
  shift
  if running "$name" >/dev/null; then
    return 0
  fi
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null 8>&- &
  echo $! >"$RUN/$name.pid"
  say "started $name (pid $!)"
}

stop() {
  local pid i
  pid="$(running "$1")" || { rm -f "$RUN/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do ours "$1" "$pid" || break; sleep 0.1; done
  ours "$1" "$pid" && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/$1.pid"
  say "stopped $1 (pid $pid)"
}

# wait_for WHAT CMD...: poll CMD until it passes or START_TIMEOUT.
wait_for() {
  local what="$1" deadline=$((SECONDS + START_TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { say "$what did not come up in ${START_TIMEOUT}s"; return 1; }
    sleep 0.5
  done
}

free_ports() {
  python3 - "$@" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
    print(s.getsockname()[1])
EOF
}

# ---- PKI: one CA; serving certs for the apiserver and kubelet; one admin client cert ----------------

pki() {
  [[ -f "$PKI/.done" ]] && return 0
  mkdir -p "$PKI"
  local o=(-days 3650 -sha256)
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" "${o[@]}" \
    -subj "/CN=complaints-allocation-test-ca" 2>/dev/null
  # cert NAME SUBJECT [SAN]: a key and a certificate signed by the CA.
  cert() {
    local ext
    ext="$(mktemp)"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n' >"$ext"
    if [[ -n "${3:-}" ]]; then
      printf 'extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$3" >>"$ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' >>"$ext"
    fi
    openssl req -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.csr" -subj "$2" 2>/dev/null
    openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -out "$PKI/$1.crt" "${o[@]}" -extfile "$ext" 2>/dev/null
    rm -f "$ext" "$PKI/$1.csr"
  }
  cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  cert kubelet "/CN=system:node:$NODE/O=system:nodes" "IP:127.0.0.1,IP:$NODE_IP,DNS:$NODE"
  # A throwaway test cluster: every component and the tests act as cluster admin (system:masters).
  cert admin "/CN=kubernetes-admin/O=system:masters"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  touch "$PKI/.done"
}

kubeconfig() {
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: ca-test
    cluster: {server: "https://127.0.0.1:$1", certificate-authority: "$PKI/ca.crt"}
users:
  - name: admin
    user: {client-certificate: "$PKI/admin.crt", client-key: "$PKI/admin.key"}
contexts:
  - name: ca-test
    context: {cluster: ca-test, user: admin, namespace: default}
current-context: ca-test
EOF
}

# ---- network ------------------------------------------------------------------------------------

FORWARD_RULE=(-s "$POD_CIDR" ! -d "$POD_CIDR" -m comment --comment ca-k8s-pods-stay-local -j DROP)

network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  [[ -f "$RUN/ip_forward" ]] || cat /proc/sys/net/ipv4/ip_forward >"$RUN/ip_forward"
  # A pod's packet to a Service address is NATed to another pod on the host: that is forwarding. The DROP
  # rule (checked after NAT) keeps pods off every address but the pod range and the host.
  iptables -C FORWARD "${FORWARD_RULE[@]}" 2>/dev/null || iptables -I FORWARD 1 "${FORWARD_RULE[@]}"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  ip netns list 2>/dev/null | awk '{print $1}' | sort >"$RUN/netns.before"
  mkdir -p "$K8S_DIR/cni/net.d"
  cat >"$K8S_DIR/cni/net.d/10-ca-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ca-pods",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$K8S_DIR/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

network_down() {
  iptables -D FORWARD "${FORWARD_RULE[@]}" 2>/dev/null || true
  [[ -x "$BIN/kube-proxy" ]] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  # The kubelet's own empty chains (its canaries, kube-proxy's mode hint), which kube-proxy --cleanup leaves.
  local tool table chain rule
  for tool in iptables ip6tables; do
    for table in filter nat mangle; do
      # Jumps from the built-in chains first (the kubelet's KUBE-FIREWALL hangs off INPUT and OUTPUT).
      while read -r rule; do
        [[ -n "$rule" ]] && eval "$tool -t $table ${rule/#-A/-D}" 2>/dev/null || true
      done < <("$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-A" && $2 !~ /^KUBE-/ && / -j KUBE-/')
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$tool" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$tool" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  if [[ -f "$RUN/netns.before" ]]; then
    # Namespaces containerd made for our pods that a killed kubelet could not tear down.
    comm -13 "$RUN/netns.before" <(ip netns list 2>/dev/null | awk '{print $1}' | sort) | grep '^cni-' \
      | while read -r ns; do ip netns delete "$ns" 2>/dev/null || true; done || true
    rm -f "$RUN/netns.before"
  fi
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  if [[ -f "$RUN/ip_forward" ]]; then
    cat "$RUN/ip_forward" >/proc/sys/net/ipv4/ip_forward
    rm -f "$RUN/ip_forward"
  fi
  rm -rf "$K8S_DIR/cni/ipam"
}

# ---- components ---------------------------------------------------------------------------------

containerd_up() {
  mkdir -p "$K8S_DIR/containerd"
  cat >"$K8S_DIR/containerd/config.toml" <<EOF
version = 2
root = "$K8S_DIR/containerd/root"
state = "$K8S_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$K8S_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_REF"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$ROOT/scripts/k8s-runc.sh"
        Root = "$K8S_DIR/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$K8S_DIR/cni/net.d"
EOF
  spawn containerd containerd --config "$K8S_DIR/containerd/config.toml"
  wait_for containerd ctr --address "$CTRD_SOCK" version
  pause_image
}

pause_image() {
  ctr --address "$CTRD_SOCK" -n k8s.io images ls -q | grep -qx "$PAUSE_REF" && return 0
  "$ROOT/scripts/images.sh" build pause
  load pause
}

etcd_up() {
  read -r cport pport <<<"$(free_ports 2 | tr "\n" " ")"
  echo "$cport" >"$RUN/etcd.port"
  spawn etcd etcd --name ca-etcd --data-dir "$K8S_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "ca-etcd=http://127.0.0.1:$pport" --listen-metrics-urls "" \
    --quota-backend-bytes 1073741824
  wait_for etcd python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$cport/health', timeout=2)"
}

apiserver_up() {
  local port
  port="$(free_ports 1)"
  echo "$port" >"$RUN/kube-apiserver.port"
  kubeconfig "$port"
  spawn kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$(cat "$RUN/etcd.port")" \
    --bind-address 127.0.0.1 --secure-port "$port" --advertise-address "$NODE_IP" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC --allow-privileged=false \
    --enable-admission-plugins NodeRestriction \
    --cert-dir "$K8S_DIR/apiserver-certs" --profiling=false
  wait_for kube-apiserver kubectl_ get --raw /readyz
}

controllers_up() {
  spawn kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --secure-port "$(free_ports 1)" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=false --leader-elect=false \
    --controllers '*,-nodeipam,-cloud-node-lifecycle,-service,-route' \
    --cert-dir "$K8S_DIR/controller-manager-certs" --profiling=false
  spawn kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --secure-port "$(free_ports 1)" --leader-elect=false \
    --cert-dir "$K8S_DIR/scheduler-certs" --profiling=false
}

kubelet_up() {
  local port hport
  read -r port hport <<<"$(free_ports 2 | tr "\n" " ")"
  mkdir -p "$K8S_DIR/kubelet"
  cat >"$K8S_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$NODE_IP"
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $hport
tlsCertFile: "$PKI/kubelet.crt"
tlsPrivateKeyFile: "$PKI/kubelet.key"
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: "unix://$CTRD_SOCK"
# This machine mounts cgroup v1 and runs no systemd: cgroupfs, and no refusal of cgroup v1 (1.34 still runs it).
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# No cluster DNS here: pods resolve with the host's resolver and reach services by their environment variables.
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# Images are loaded by hand (no registry): never garbage-collect them, never evict for a busy disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
maxPods: 40
syncFrequency: 10s
fileCheckFrequency: 10s
EOF
  spawn kubelet "$BIN/kubelet" --config "$K8S_DIR/kubelet-config.yaml" --kubeconfig "$KUBECONFIG_FILE" \
    --root-dir "$K8S_DIR/kubelet" --cert-dir "$K8S_DIR/kubelet-certs" \
    --hostname-override "$NODE" --node-ip "$NODE_IP"
  cat >"$K8S_DIR/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$KUBECONFIG_FILE"}
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: "$NODE"
bindAddress: 127.0.0.1
healthzBindAddress: "127.0.0.1:$(free_ports 1)"
metricsBindAddress: "127.0.0.1:$(free_ports 1)"
# Pod to Service to a pod on the same bridge: masquerade, so the reply comes back through the host's NAT.
iptables: {masqueradeAll: true}
conntrack: {maxPerCore: 0}
EOF
  spawn kube-proxy "$BIN/kube-proxy" --config "$K8S_DIR/kube-proxy-config.yaml"
}

node_ready() {
  [[ "$(kubectl_ get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

up() {
  local t0=$SECONDS
  [[ "$(id -u)" == 0 ]] || die "the kubelet and containerd need root"
  need_packages
  "$ROOT/scripts/k8s-build.sh" >/dev/null
  mkdir -p "$LOGS" "$RUN"
  exec 8>"$RUN/lock"
  flock -w 300 8 || die "another k8s.sh holds $RUN/lock"
  pki
  network_up
  containerd_up
  running etcd >/dev/null || etcd_up
  running kube-apiserver >/dev/null || apiserver_up
  controllers_up
  kubelet_up
  wait_for "the node" node_ready || { tail -n 30 "$LOGS/kubelet.log" >&2; exit 1; }
  # Pods may not start before the default ServiceAccount exists.
  wait_for "the default ServiceAccount" kubectl_ get serviceaccount default
  # The Kafka and Redis that pods use: a stack of its own, listening on the bridge as well as on loopback.
  STACK_DIR="$K8S_DIR/stack" STACK_POD_ADDRESS="$NODE_IP" STACK_KAFKA_PORT=0 STACK_REDIS_PORT=0 \
    bash "$ROOT/scripts/stack.sh" up >"$LOGS/stack-up.log" 2>&1 8>&- || { cat "$LOGS/stack-up.log" >&2; exit 1; }
  {
    printf 'KUBECONFIG=%s\nK8S_NODE_IP=%s\nK8S_CONTAINERD_SOCK=%s\nK8S_BIN=%s\n' \
      "$KUBECONFIG_FILE" "$NODE_IP" "$CTRD_SOCK" "$BIN"
    sed 's/^/K8S_/' "$K8S_DIR/stack/env"
  } >"$K8S_DIR/env"
  say "ready in $((SECONDS - t0))s: $("$BIN/kubectl" version --kubeconfig "$KUBECONFIG_FILE" 2>/dev/null | tail -1)"
  say "environment in $K8S_DIR/env"
}

down() {
  mkdir -p "$RUN"
  exec 8>"$RUN/lock"
  flock -w 300 8 || die "another k8s.sh holds $RUN/lock"
  # Let the kubelet tear pods down (their network namespaces and mounts) while it still runs.
  if running kubelet >/dev/null && running kube-apiserver >/dev/null; then
    kubectl_ delete namespaces -l ca-test=true --wait=false >/dev/null 2>&1 || true
    kubectl_ delete pods --all --all-namespaces --grace-period=1 --timeout=60s >/dev/null 2>&1 || true
  fi
  STACK_DIR="$K8S_DIR/stack" bash "$ROOT/scripts/stack.sh" down >/dev/null 2>&1 8>&- || true
  local c
  for c in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
  # Containers the kubelet did not remove: their shims were started with our containerd's address.
  pkill -KILL -f "containerd-shim.*$K8S_DIR" 2>/dev/null || true
  stop containerd
  findmnt -rn -o TARGET | { grep "^$K8S_DIR/" || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  network_down
  rm -f "$K8S_DIR/env"
}

status() {
  local rc=0 c
  for c in "${COMPONENTS[@]}"; do
    if pid="$(running "$c")"; then say "$c running (pid $pid)"; else say "$c not running"; rc=1; fi
  done
  return "$rc"
}

load() {
  local name file
  [[ -S "$CTRD_SOCK" ]] || die "containerd is not running: scripts/k8s.sh up"
  for name in "$@"; do
    file="$(mktemp --suffix .tar)"
    "$ROOT/scripts/images.sh" archive "$name" "$file"
    ctr --address "$CTRD_SOCK" -n k8s.io images import "$file" >/dev/null
    rm -f "$file"
    say "loaded $("$ROOT/scripts/images.sh" ref "$name") into the node"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  load) shift; load "$@" ;;
  kubectl) shift; kubectl_ "$@" ;;
  *) sed -n '6,13p' "$0" >&2; exit 2 ;;
esac
