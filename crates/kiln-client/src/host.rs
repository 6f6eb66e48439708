//! Facts of the machine: what `kiln serve`'s defaults are made of, read the same way by the
//! server and by `kiln bench` (which must know the server's default to raise it).

/// The machine's memory in MB (`MemTotal` of /proc/meminfo), if it can be read.
pub fn memory_total_mb() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total_kb(&meminfo).map(|kb| kb / 1024)
}

fn parse_mem_total_kb(meminfo: &str) -> Option<u64> {
    let v = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

/// `kiln serve`'s default memory budget (the sum of MemorySize of live environments): three
/// quarters of the machine's memory, in MB; of 8 GiB when the machine's cannot be read.
pub fn default_memory_budget_mb() -> u64 {
    memory_total_mb().unwrap_or(8 * 1024) * 3 / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_kb() {
        assert_eq!(parse_mem_total_kb("MemFree: 1 kB\nMemTotal:       25165824 kB\n"), Some(25_165_824));
        assert_eq!(parse_mem_total_kb("MemFree: 1 kB\n"), None);
        assert!(default_memory_budget_mb() > 0);
    }
}
