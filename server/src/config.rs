//! The server's configuration, in layers: built-in defaults, then a TOML
//! file (`--config`, or `PHOTONDB_CONFIG`), then `PHOTONDB_*` environment
//! variables, then command-line flags; each layer overrides the ones
//! before it, key by key (figment does the merging). Sizes and durations
//! are written in human units (`"1GiB"`, `"90s"`) everywhere.
//! `photondb config print` shows the result.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where rows live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// WAL + checkpoints on disk (direct I/O); survives crashes.
    Durable,
    /// Memory only; everything is gone at exit.
    Memory,
}

/// The effective configuration of `photondb serve`. Keys are the TOML
/// file's keys; the environment variable of a key is `PHOTONDB_` and the
/// key in capitals, its flag `--` and the key with dashes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(deserialize_with = "path")]
    pub data_dir: PathBuf,
    /// Shards (none: one per core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<usize>,
    pub storage: Storage,
    pub partitions: u32,
    pub bind: IpAddr,
    pub driver_port: u16,
    pub http_port: u16,
    #[serde(deserialize_with = "text")]
    pub initial_password: String,
    pub shutdown_grace: Span,
    pub cache_size: CacheSize,
    pub wal_ring_size: Size,
    #[serde(deserialize_with = "list")]
    pub cors_origins: Vec<String>,
    pub http_timeout: Span,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            data_dir: PathBuf::from("./photondb_data"),
            cores: None,
            storage: Storage::Durable,
            partitions: 8,
            bind: IpAddr::from([127, 0, 0, 1]),
            driver_port: 28015,
            http_port: 8080,
            initial_password: String::new(),
            shutdown_grace: Span(Duration::from_secs(10)),
            cache_size: CacheSize::Auto,
            wal_ring_size: Size(64 << 20),
            cors_origins: Vec::new(),
            http_timeout: Span(Duration::from_secs(60)),
        }
    }
}

/// The keys the environment may set (`PHOTONDB_` + the key in capitals);
/// other `PHOTONDB_*` variables belong to the client commands.
const KEYS: [&str; 13] = [
    "data_dir",
    "cores",
    "storage",
    "partitions",
    "bind",
    "driver_port",
    "http_port",
    "initial_password",
    "shutdown_grace",
    "cache_size",
    "wal_ring_size",
    "cors_origins",
    "http_timeout",
];

/// `serve`'s flags: each overrides the layers below it only when given.
#[derive(clap::Args, Serialize, Default, Clone, Debug)]
pub struct Flags {
    /// A TOML file of settings (keys as `photondb config print` shows them).
    #[arg(long, env = "PHOTONDB_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where the data lives; created on first start [default: ./photondb_data].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Number of shards, one thread pinned per core [default: every core].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<usize>,
    /// [default: durable]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// Partitions of a new data directory (fixed for its lifetime; more
    /// partitions let a later restart spread over more cores) [default: 8].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<IpAddr>,
    /// Port for RethinkDB drivers (0: any free port; the log names it)
    /// [default: 28015].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_port: Option<u16>,
    /// Port for the HTTP API, health probes and metrics (0: any free port)
    /// [default: 8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// Password of the `admin` user, set when a data directory is first
    /// started (empty by default, as in RethinkDB); later starts keep the
    /// stored one.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_password: Option<String>,
    /// On SIGINT/SIGTERM, how long running queries may take to finish
    /// before the server stops anyway (`10s`, `2m`) [default: 10s].
    #[arg(long, value_parser = Span::parse)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<Span>,
    /// Memory for cached data pages, shared by all partitions (`1GiB`,
    /// `512MiB`), or `auto`: half of the memory available at start, less
    /// 1 GiB, at least 100 MiB, as RethinkDB sizes its cache [default: auto].
    #[arg(long, value_parser = CacheSize::parse)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<CacheSize>,
    /// WAL ring size per partition of a new data directory: a larger ring
    /// checkpoints less often (faster loads) and replays longer after a
    /// crash [default: 64MiB].
    #[arg(long, value_parser = Size::parse)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_ring_size: Option<Size>,
    /// An origin browsers may call the HTTP API from (`https://app.example`,
    /// or `*` for any); repeat for several. None, the default: cross-origin
    /// calls are refused.
    #[arg(long = "cors-origin", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// Longest an HTTP request may take before it is answered 408
    /// (WebSockets, once open, are not limited) [default: 60s].
    #[arg(long, value_parser = Span::parse)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_timeout: Option<Span>,
    // Earlier spellings, in plain numbers, still accepted.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub cache_size_mb: Option<u64>,
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub wal_ring_mib: Option<u64>,
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub shutdown_grace_seconds: Option<u64>,
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub http_timeout_seconds: Option<u64>,
}

impl Settings {
    /// Defaults < file < environment < flags.
    pub fn load(flags: &Flags) -> anyhow::Result<Settings> {
        let mut flags = flags.clone();
        flags.cache_size = flags.cache_size.or(flags
            .cache_size_mb
            .map(|mib| CacheSize::Fixed(Size(mib << 20))));
        flags.wal_ring_size = flags
            .wal_ring_size
            .or(flags.wal_ring_mib.map(|mib| Size(mib << 20)));
        flags.shutdown_grace = flags.shutdown_grace.or(flags
            .shutdown_grace_seconds
            .map(|seconds| Span(Duration::from_secs(seconds))));
        flags.http_timeout = flags.http_timeout.or(flags
            .http_timeout_seconds
            .map(|seconds| Span(Duration::from_secs(seconds))));
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = &flags.config {
            // A file named but missing is a mistake, not an empty layer.
            anyhow::ensure!(
                file.is_file(),
                "the configuration file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file_exact(file));
        }
        let settings: Settings = figment
            .merge(Env::prefixed("PHOTONDB_").only(&KEYS))
            .merge(Serialized::defaults(&flags))
            .extract()
            .map_err(|error| anyhow::anyhow!("{}", one_line(error)))
            .context("reading the configuration")?;
        anyhow::ensure!(
            (1..=4096).contains(&settings.partitions),
            "partitions must be between 1 and 4096"
        );
        anyhow::ensure!(settings.cores != Some(0), "cores must be at least 1");
        Ok(settings)
    }

    /// The settings as TOML, the password hidden.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.initial_password.is_empty() {
            shown.initial_password = "(hidden)".into();
        }
        toml::to_string(&shown).expect("settings serialize")
    }
}

/// figment's error with every cause on one line.
fn one_line(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|error| error.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A size in bytes, written `64KiB`, `512MiB`, `1GiB`, `10MB` or a plain
/// number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(text: &str) -> Result<Size, String> {
        let text = text.trim();
        let split = text
            .find(|character: char| !character.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("expected a size such as 512MiB, found {text:?}"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {text:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                ))
            }
        };
        number
            .checked_mul(scale)
            .map(Size)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (unit, scale) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(formatter, "{}{unit}", self.0 / scale);
            }
        }
        write!(formatter, "{}B", self.0)
    }
}

/// The page cache's budget: a fixed size, or sized from the memory the
/// machine (or its container) has available when the server starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSize {
    Auto,
    Fixed(Size),
}

/// What `auto` keeps back for queries, connections and the allocator
/// before halving the rest (RethinkDB's rule), and its floor.
const CACHE_RESERVE: u64 = 1 << 30;
const CACHE_FLOOR: u64 = 100 << 20;

impl CacheSize {
    pub fn parse(text: &str) -> Result<CacheSize, String> {
        if text.trim().eq_ignore_ascii_case("auto") {
            return Ok(CacheSize::Auto);
        }
        Size::parse(text)
            .map(CacheSize::Fixed)
            .map_err(|error| format!("{error}, or auto"))
    }

    /// The budget in bytes; `auto` asks `available` (bytes of memory free
    /// for this process) only when it is needed.
    pub fn bytes(self, available: impl FnOnce() -> Option<u64>) -> u64 {
        match self {
            CacheSize::Fixed(size) => size.0,
            // Without a reading, the floor: a small cache is slow, a large
            // one on a small machine is an out-of-memory kill.
            CacheSize::Auto => available().map_or(CACHE_FLOOR, |available| {
                (available.saturating_sub(CACHE_RESERVE) / 2).max(CACHE_FLOOR)
            }),
        }
    }
}

impl std::fmt::Display for CacheSize {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheSize::Auto => formatter.write_str("auto"),
            CacheSize::Fixed(size) => size.fmt(formatter),
        }
    }
}

impl<'de> Deserialize<'de> for CacheSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<CacheSize, D::Error> {
        match Human::deserialize(deserializer)? {
            Human::Number(bytes) => Ok(CacheSize::Fixed(Size(bytes))),
            Human::Text(text) => CacheSize::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for CacheSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Bytes of memory this process may still use: the kernel's
/// `MemAvailable` (free memory plus what it can reclaim, such as its page
/// cache), lowered to the room left under a cgroup limit when the server
/// runs in a container. None when neither can be read.
pub fn available_memory() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| meminfo_available(&meminfo));
    let container = cgroup_room("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current")
        .or_else(|| {
            cgroup_room(
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.usage_in_bytes",
            )
        });
    match (machine, container) {
        (Some(machine), Some(container)) => Some(machine.min(container)),
        (machine, container) => machine.or(container),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kibibytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kibibytes.checked_mul(1024)
}

/// The room under a cgroup's memory limit: none when there is no limit
/// (`max`, or cgroup v1's near-2^63 "unlimited").
fn cgroup_room(limit: &str, usage: &str) -> Option<u64> {
    let limit: u64 = std::fs::read_to_string(limit).ok()?.trim().parse().ok()?;
    if limit >= 1 << 60 {
        return None;
    }
    let usage: u64 = std::fs::read_to_string(usage)
        .ok()
        .and_then(|usage| usage.trim().parse().ok())
        .unwrap_or(0);
    Some(limit.saturating_sub(usage))
}

/// A duration, written `500ms`, `10s`, `2m`, `1h`, `1d` or a plain number
/// of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    pub fn parse(text: &str) -> Result<Span, String> {
        let text = text.trim();
        let split = text
            .find(|character: char| !character.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("expected a duration such as 30s, found {text:?}"))?;
        let milliseconds: u64 = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {text:?} (use ms, s, m, h or d)"
                ))
            }
        };
        number
            .checked_mul(milliseconds)
            .map(|total| Span(Duration::from_millis(total)))
            .ok_or_else(|| format!("{text:?} is too long"))
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let milliseconds = self.0.as_millis() as u64;
        for (unit, scale) in [
            ("d", 86_400_000u64),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if milliseconds >= scale && milliseconds.is_multiple_of(scale) {
                return write!(formatter, "{}{unit}", milliseconds / scale);
            }
        }
        write!(formatter, "{milliseconds}ms")
    }
}

/// A human value from a file or the environment: a string with a unit, or
/// a plain number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Human {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        match Human::deserialize(deserializer)? {
            Human::Number(bytes) => Ok(Size(bytes)),
            Human::Text(text) => Size::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Span, D::Error> {
        match Human::deserialize(deserializer)? {
            Human::Number(seconds) => Ok(Span(Duration::from_secs(seconds))),
            Human::Text(text) => Span::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Any scalar as text: the environment turns `PHOTONDB_INITIAL_PASSWORD=123`
/// into a number, which is still a password.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Text(text) => text,
            Scalar::Integer(number) => number.to_string(),
            Scalar::Float(number) => number.to_string(),
            Scalar::Bool(value) => value.to_string(),
        }
    }
}

fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Scalar::deserialize(deserializer)?.into_string())
}

fn path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    text(deserializer).map(PathBuf::from)
}

/// A list, or one string of comma-separated items (as the environment
/// gives it).
fn list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        Many(Vec<String>),
        One(String),
    }
    Ok(match Items::deserialize(deserializer)? {
        Items::Many(items) => items,
        Items::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_and_print_in_human_units() {
        assert_eq!(Size::parse("512MiB"), Ok(Size(512 << 20)));
        assert_eq!(Size::parse("10MB"), Ok(Size(10_000_000)));
        assert_eq!(Size::parse("4096"), Ok(Size(4096)));
        assert!(Size::parse("12 parsecs")
            .unwrap_err()
            .contains("unknown size unit"));
        assert!(Size::parse("GiB").is_err());
        assert!(Size::parse("99999999999TiB").is_err());
        assert_eq!(Size(1 << 30).to_string(), "1GiB");
        assert_eq!(Size(1536 << 10).to_string(), "1536KiB");
        assert_eq!(Size(1000).to_string(), "1000B");
        assert_eq!(Span::parse("90s"), Ok(Span(Duration::from_secs(90))));
        assert_eq!(Span::parse("250ms"), Ok(Span(Duration::from_millis(250))));
        assert_eq!(Span::parse("2"), Ok(Span(Duration::from_secs(2))));
        assert!(Span::parse("soon").is_err());
        assert_eq!(Span(Duration::from_secs(120)).to_string(), "2m");
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1500ms");
        for printed in ["1GiB", "3MiB", "7B"] {
            assert_eq!(Size::parse(printed).unwrap().to_string(), printed);
        }
    }

    #[test]
    fn an_automatic_cache_takes_half_the_available_memory_less_a_reserve() {
        let gib = 1u64 << 30;
        assert_eq!(CacheSize::parse("auto"), Ok(CacheSize::Auto));
        assert_eq!(
            CacheSize::parse("2GiB"),
            Ok(CacheSize::Fixed(Size(2 * gib)))
        );
        assert!(CacheSize::parse("some").unwrap_err().contains("or auto"));
        assert_eq!(CacheSize::Auto.to_string(), "auto");
        // RethinkDB's rule: (available - 1 GiB) / 2, never below 100 MiB.
        assert_eq!(CacheSize::Auto.bytes(|| Some(24 * gib)), 23 * gib / 2);
        assert_eq!(CacheSize::Auto.bytes(|| Some(gib)), 100 << 20);
        assert_eq!(CacheSize::Auto.bytes(|| None), 100 << 20);
        // A fixed size never asks for the machine's memory.
        assert_eq!(
            CacheSize::Fixed(Size(gib)).bytes(|| unreachable!("fixed sizes read no memory")),
            gib
        );
        let meminfo =
            "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
    }
}
