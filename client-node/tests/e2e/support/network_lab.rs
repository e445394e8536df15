//! A small network that one test makes and removes: a namespace holding the coordinator's
//! address and one namespace per node, joined by a veth link each, with faults applied by `nft`
//! and `ip` inside those namespaces only. Nothing outside them is touched: the links are
//! created inside the coordinator's namespace with their peer end moved straight into the
//! node's, and namespaces are named after this process so a stale one is recognised.
//!
//! The coordinator itself runs in the test process. Its address as the nodes see it,
//! [`COORDINATOR_IP`]:[`COORDINATOR_PORT`], is a `socat` listener inside the coordinator's
//! namespace that carries each connection to a Unix socket (a path in the file system, so it
//! crosses namespaces) served by [`Relay`], which connects on to the coordinator and can delay
//! every chunk (latency with jitter, in user space: this kernel has no `sch_netem`; see
//! docs/network-faults.md).
// Each test uses part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;

/// The coordinator's address as every node sees it: on the loopback interface of the
/// coordinator's namespace, routed over each node's own link.
pub const COORDINATOR_IP: &str = "10.200.0.1";
/// The port of [`COORDINATOR_IP`].
pub const COORDINATOR_PORT: u16 = 7000;
/// Every namespace a lab makes starts with this, then this process's id.
const NAME_PREFIX: &str = "veil-nf-";
/// The nft table a fault lives in, inside a node's namespace.
const FAULT_TABLE: &str = "veil_faults";

/// Labs made by this process so far, for unique names.
static LABS: AtomicUsize = AtomicUsize::new(0);

/// Runs `program args`, failing with its standard error.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("{program} {}: {error}", args.join(" ")))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip args`, panicking with a message naming the command: a lab that cannot be built or
/// changed is a failed test, not a skipped one.
fn ip(args: &[&str]) {
    if let Err(error) = run("ip", args) {
        panic!("network lab: {error}");
    }
}

/// Installs `nft` and `socat` if missing (scripts/install-network-tools), failing by name.
fn ensure_tools() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-network-tools");
    if let Err(error) = run(script.to_str().unwrap_or_default(), &[]) {
        panic!(
            "the network-fault tests need root, `ip`, `nft` and `socat` \
             (scripts/install-network-tools): {error}"
        );
    }
}

/// Deletes namespaces a lab of a process that no longer runs left behind (a test killed
/// with SIGKILL cannot clean up). Only names of the form `veil-nf-<pid>-…` with a dead pid.
fn remove_stale_namespaces() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some(pid) = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A fault on one node's link, as nft rules in the node's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFault {
    /// Each packet, in and out, is dropped with this probability in percent
    /// (`numgen random mod 100 < p drop`).
    Loss { percent: u32 },
    /// Every packet in and out is dropped: the node is cut off.
    Partition,
}

/// The namespaces, links and processes of one test; all removed on drop, panics included.
pub struct NetworkLab {
    /// `veil-nf-<pid>-<n>`: the start of every namespace's name.
    prefix: String,
    coordinator_namespace: String,
    node_namespaces: Vec<String>,
    /// Where the lab writes nft rule files and socat's log.
    dir: PathBuf,
    /// The Unix socket the coordinator namespace's listener forwards to.
    socket: PathBuf,
    /// Processes started in the namespaces, each the leader of its own process group so
    /// that socat's per-connection children die with it.
    processes: Vec<Option<Child>>,
}

impl NetworkLab {
    /// Makes the coordinator's namespace and `nodes` node namespaces, each node linked to
    /// the coordinator's by a veth pair (`n<i>` in the node's namespace, `c<i>` in the
    /// coordinator's, 10.201.<i>.0/30) and routed to [`COORDINATOR_IP`], and starts the
    /// coordinator address's listener, which forwards to the Unix socket `socket()`.
    pub fn create(dir: &Path, nodes: usize) -> Self {
        ensure_tools();
        remove_stale_namespaces();
        let prefix = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Self {
            coordinator_namespace: format!("{prefix}-c"),
            node_namespaces: Vec::new(),
            prefix,
            dir: dir.to_owned(),
            socket: dir.join("coordinator.sock"),
            processes: Vec::new(),
        };
        let coordinator = lab.coordinator_namespace.clone();
        ip(&["netns", "add", &coordinator]);
        ip(&["-n", &coordinator, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &coordinator,
            "addr",
            "add",
            &format!("{COORDINATOR_IP}/32"),
            "dev",
            "lo",
        ]);
        for index in 0..nodes {
            let namespace = format!("{}-n{index}", lab.prefix);
            ip(&["netns", "add", &namespace]);
            lab.node_namespaces.push(namespace.clone());
            ip(&["-n", &namespace, "link", "set", "lo", "up"]);
            let (near, far) = (format!("c{index}"), format!("n{index}"));
            ip(&[
                "-n",
                &coordinator,
                "link",
                "add",
                &near,
                "type",
                "veth",
                "peer",
                "name",
                &far,
                "netns",
                &namespace,
            ]);
            let subnet = format!("10.201.{index}");
            ip(&[
                "-n",
                &coordinator,
                "addr",
                "add",
                &format!("{subnet}.1/30"),
                "dev",
                &near,
            ]);
            ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{subnet}.2/30"),
                "dev",
                &far,
            ]);
            ip(&["-n", &coordinator, "link", "set", &near, "up"]);
            ip(&["-n", &namespace, "link", "set", &far, "up"]);
            ip(&[
                "-n",
                &namespace,
                "route",
                "add",
                &format!("{COORDINATOR_IP}/32"),
                "via",
                &format!("{subnet}.1"),
            ]);
        }
        // Listening on every address of the namespace, so the listener outlives the
        // coordinator's address being removed and added back.
        let log = dir.join("socat.log");
        let mut socat = Command::new("socat");
        socat.args([
            &format!("TCP-LISTEN:{COORDINATOR_PORT},fork,reuseaddr"),
            &format!("UNIX-CONNECT:{}", lab.socket.display()),
        ]);
        lab.spawn_in(&coordinator, socat, &log);
        lab
    }

    /// The Unix socket the coordinator's address leads to: serve it with [`Relay`].
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The coordinator's URL for nodes.
    pub fn coordinator_url(&self) -> String {
        format!("https://{COORDINATOR_IP}:{COORDINATOR_PORT}")
    }

    /// Starts `program` inside node `index`'s namespace, its output in `log`; returns a
    /// handle for [`NetworkLab::kill`].
    pub fn spawn_on_node(&mut self, index: usize, program: Command, log: &Path) -> usize {
        let namespace = self.node_namespaces[index].clone();
        self.spawn_in(&namespace, program, log)
    }

    fn spawn_in(&mut self, namespace: &str, program: Command, log: &Path) -> usize {
        let log = std::fs::File::create(log).expect("a lab process's log file");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", namespace])
            .arg(program.get_program())
            .args(program.get_args())
            .envs(
                program
                    .get_envs()
                    .filter_map(|(key, value)| value.map(|value| (key, value))),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a lab process's log file"))
            .stderr(log);
        // `ip netns exec` execs the program, so the child is the program and leads its own
        // group: killing the group takes socat's per-connection children with it.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        let child = command.spawn().unwrap_or_else(|error| {
            panic!("network lab: starting a process in {namespace}: {error}")
        });
        self.processes.push(Some(child));
        self.processes.len() - 1
    }

    /// Kills (SIGKILL) the process group of a process [`NetworkLab::spawn_on_node`] started,
    /// and reaps it.
    pub fn kill(&mut self, handle: usize) {
        if let Some(mut child) = self.processes.get_mut(handle).and_then(Option::take) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether a started process still runs.
    pub fn is_running(&mut self, handle: usize) -> bool {
        self.processes
            .get_mut(handle)
            .and_then(Option::as_mut)
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Applies `fault` to node `index`'s link (replacing any fault already there).
    pub fn apply(&self, index: usize, fault: LinkFault) {
        self.heal(index);
        let link = format!("n{index}");
        let verdict = match fault {
            LinkFault::Loss { percent } => {
                format!("numgen random mod 100 < {percent} counter drop")
            }
            LinkFault::Partition => "counter drop".to_owned(),
        };
        let rules = format!(
            "table inet {FAULT_TABLE} {{\n\
             \tchain inbound {{ type filter hook input priority 0; policy accept; iifname \"{link}\" {verdict}; }}\n\
             \tchain outbound {{ type filter hook output priority 0; policy accept; oifname \"{link}\" {verdict}; }}\n\
             }}\n"
        );
        let file = self.dir.join(format!("fault-n{index}.nft"));
        std::fs::write(&file, rules).expect("an nft rule file");
        if let Err(error) = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.node_namespaces[index],
                "nft",
                "-f",
                file.to_str().unwrap_or_default(),
            ],
        ) {
            panic!("network lab: {error}");
        }
    }

    /// Packets node `index`'s fault has dropped so far, both directions (its rules' counters).
    pub fn dropped_packets(&self, index: usize) -> u64 {
        let listing = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.node_namespaces[index],
                "nft",
                "list",
                "table",
                "inet",
                FAULT_TABLE,
            ],
        )
        .unwrap_or_else(|error| panic!("network lab: {error}"));
        let words: Vec<&str> = listing.split_whitespace().collect();
        words
            .windows(2)
            .filter(|pair| pair[0] == "packets")
            .filter_map(|pair| pair[1].parse::<u64>().ok())
            .sum()
    }

    /// Removes node `index`'s fault, if any.
    pub fn heal(&self, index: usize) {
        // Fails only when there is no table, which is what healing wants.
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.node_namespaces[index],
                "nft",
                "delete",
                "table",
                "inet",
                FAULT_TABLE,
            ],
        );
    }

    /// Removes the coordinator's address: nodes' packets to it are dropped.
    pub fn remove_coordinator_address(&self) {
        ip(&[
            "-n",
            &self.coordinator_namespace,
            "addr",
            "del",
            &format!("{COORDINATOR_IP}/32"),
            "dev",
            "lo",
        ]);
    }

    /// Adds the coordinator's address back.
    pub fn restore_coordinator_address(&self) {
        ip(&[
            "-n",
            &self.coordinator_namespace,
            "addr",
            "add",
            &format!("{COORDINATOR_IP}/32"),
            "dev",
            "lo",
        ]);
    }
}

impl Drop for NetworkLab {
    fn drop(&mut self) {
        for handle in 0..self.processes.len() {
            self.kill(handle);
        }
        for namespace in self
            .node_namespaces
            .iter()
            .chain(std::iter::once(&self.coordinator_namespace))
        {
            let _ = run("ip", &["netns", "del", namespace]);
        }
    }
}

/// One-way delay added to every chunk crossing the relay, in each direction.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// The mean one-way delay.
    pub one_way: Duration,
    /// Each chunk's delay is `one_way` plus a uniform draw in `[-jitter, +jitter]`; chunks
    /// never overtake each other (TCP would reorder them back anyway).
    pub jitter: Duration,
}

/// Serves the lab's Unix socket: every connection is carried on to `target` (the
/// coordinator), delayed by the current [`Latency`] if one is set. Stops on drop.
pub struct Relay {
    latency: Arc<Mutex<Option<Latency>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on `socket` and forwards to `target`.
    pub fn start(socket: &Path, target: std::net::SocketAddr) -> Self {
        let listener = UnixListener::bind(socket).expect("the relay's Unix socket");
        let latency: Arc<Mutex<Option<Latency>>> = Arc::new(Mutex::new(None));
        let shared = Arc::clone(&latency);
        let task = tokio::spawn(async move {
            // Connections live in this set, so stopping the relay stops them all.
            let mut connections = tokio::task::JoinSet::new();
            let mut seed = 0_u64;
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        seed += 1;
                        connections.spawn(carry(stream, target, Arc::clone(&shared), seed));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Self { latency, task }
    }

    /// Sets (or clears) the delay of every chunk from now on.
    pub fn set_latency(&self, latency: Option<Latency>) {
        if let Ok(mut current) = self.latency.lock() {
            *current = latency;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries one connection both ways until either side closes.
async fn carry(
    incoming: UnixStream,
    target: std::net::SocketAddr,
    latency: Arc<Mutex<Option<Latency>>>,
    seed: u64,
) {
    let Ok(outgoing) = TcpStream::connect(target).await else {
        return;
    };
    let _ = outgoing.set_nodelay(true);
    let (incoming_read, incoming_write) = incoming.into_split();
    let (outgoing_read, outgoing_write) = outgoing.into_split();
    let up = pump(
        incoming_read,
        outgoing_write,
        Arc::clone(&latency),
        seed * 2,
    );
    let down = pump(outgoing_read, incoming_write, latency, seed * 2 + 1);
    // When one direction ends the connection is over: the other is dropped with it.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Copies `reader` to `writer`, holding each chunk for its delay and keeping their order.
async fn pump(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    mut writer: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
    latency: Arc<Mutex<Option<Latency>>>,
    seed: u64,
) {
    let (chunks, mut queued) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writing = async move {
        while let Some((due, bytes)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    let reading = async move {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut last_due = Instant::now();
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let Ok(read) = reader.read(&mut buffer).await else {
                return;
            };
            if read == 0 {
                return;
            }
            let delay = latency.lock().ok().and_then(|current| *current).map_or(
                Duration::ZERO,
                |latency| {
                    let jitter = latency.jitter.as_secs_f64();
                    let draw = f64::from(rng.next_u32()) / f64::from(u32::MAX);
                    let offset = (2.0 * draw - 1.0) * jitter;
                    Duration::from_secs_f64((latency.one_way.as_secs_f64() + offset).max(0.0))
                },
            );
            let due = (Instant::now() + delay).max(last_due);
            last_due = due;
            if chunks.send((due, buffer[..read].to_vec())).is_err() {
                return;
            }
        }
    };
    // The writer finishes what was read before the reader's end (dropping the sender).
    let (_, ()) = tokio::join!(reading, writing);
}
