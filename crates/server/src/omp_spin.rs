//! `--omp-spin`: how long llama.cpp's CPU threads spin at a barrier before they sleep.
//!
//! llama.cpp's CPU backend runs each step on OpenMP threads (libgomp), which wait for each
//! other at every operation's barrier. libgomp's own default spins 300,000 times before
//! sleeping, so a thread that has no work keeps its core meanwhile. On a CPU server
//! the cores are shared with the server's own threads and its tools (the `python` tool's
//! processes, the search index). Measured on 2 cores, 2026-12-04 (docs/server-tools.md,
//! "Sharing the cores"): with 10,000 spins 8 streams decoded as fast as with 300,000, beside
//! a CPU-bound helper process too, and the helper's pieces ran 27–29% faster
//! (`bench/omp-spin.sh`); the Conveyor plan workload under 8-way load reached 0.78 of its
//! bound over four runs against 0.63 over three, and code 0.97 against 0.86
//! (`bench/conveyor.sh`). Sleeping at once (0, or `OMP_WAIT_POLICY=passive`) slowed every
//! step by about a fifth instead.
//!
//! libgomp reads its setting once, from the environment, when it is loaded, which is before
//! `main` runs; there is no call to change it later. So a spin count that is not yet in force
//! is put in place by running this same binary again (same process id, same arguments) with
//! `GOMP_SPINCOUNT` set. A `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY` the user set wins over the flag.

/// The default `--omp-spin`: see the module docs for the measurements behind it.
pub const DEFAULT_SPIN: u64 = 10_000;

/// What `main` does about the spin count, from the flag and the environment libgomp read.
#[derive(Debug, PartialEq, Eq)]
pub enum SpinPlan {
    /// The flag's count is already in force (a previous exec, or the user set the same value).
    InForce(u64),
    /// Run the binary again with `GOMP_SPINCOUNT` set to this.
    Reexec(u64),
    /// The user's own OpenMP setting (`NAME=value`) is in force and differs from the flag.
    UserSetting(String),
}

/// The plan for `--omp-spin flag`, given the values of `GOMP_SPINCOUNT` and `OMP_WAIT_POLICY`
/// in this process's environment. An empty value counts as unset, as libgomp takes it.
pub fn plan(flag: u64, gomp_spincount: Option<&str>, omp_wait_policy: Option<&str>) -> SpinPlan {
    match (set(gomp_spincount), set(omp_wait_policy)) {
        (Some(v), _) if v.trim() == flag.to_string() => SpinPlan::InForce(flag),
        (Some(v), _) => SpinPlan::UserSetting(format!("GOMP_SPINCOUNT={v}")),
        (None, Some(p)) => SpinPlan::UserSetting(format!("OMP_WAIT_POLICY={p}")),
        (None, None) => SpinPlan::Reexec(flag),
    }
}

/// A variable's value, or `None` when it is unset or empty.
fn set(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_environment_is_run_again_with_the_flag() {
        assert_eq!(plan(10_000, None, None), SpinPlan::Reexec(10_000));
    }

    #[test]
    fn empty_values_count_as_unset() {
        assert_eq!(plan(10_000, Some(""), Some(" ")), SpinPlan::Reexec(10_000));
    }

    #[test]
    fn the_flag_already_in_the_environment_is_in_force() {
        assert_eq!(plan(10_000, Some("10000"), None), SpinPlan::InForce(10_000));
    }

    #[test]
    fn the_users_own_setting_wins() {
        assert_eq!(
            plan(10_000, Some("300k"), None),
            SpinPlan::UserSetting("GOMP_SPINCOUNT=300k".into())
        );
        assert_eq!(
            plan(10_000, None, Some("passive")),
            SpinPlan::UserSetting("OMP_WAIT_POLICY=passive".into())
        );
    }
}
