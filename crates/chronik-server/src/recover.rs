//! `chronik-server recover-quorum-loss`: makes a stopped node of a cluster that lost its
//! quorum for good the only voter of every group it holds (offline), and says what that did.

use anyhow::Context;
use chronik_cluster::{NodeOptions, recover_from_quorum_loss};
use chronik_config::Config;

/// What an operator must accept before it runs; printed when `--confirm` is missing.
const CONSEQUENCES: &str = "\
quorum-loss recovery makes this node the only voter of the metadata group and of every
partition it holds, then, on its next start, removes every other node for good (their ids are
refused from then on). Partitions this node holds no log of are lost. Writes a quorum
acknowledged without this node are lost; writes this node holds that no quorum acknowledged
become committed. Run it on ONE surviving node only, with the node stopped and every other
node stopped for good (wipe a survivor you keep, and add it back under a new id).";

pub fn run(config: &Config, confirm: bool) -> anyhow::Result<u8> {
    if !config.cluster.enabled {
        anyhow::bail!("quorum-loss recovery is for a node of a cluster (`[cluster] enabled = true` in its config)");
    }
    if !confirm {
        eprintln!("{CONSEQUENCES}\n\nNothing was changed. Rerun with --confirm to go ahead.");
        return Ok(2);
    }
    let opts = NodeOptions::from_config(config);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime
        .block_on(recover_from_quorum_loss(&opts))
        .with_context(|| format!("recovering node {} in {}", opts.node_id, opts.data_dir.display()))?;
    println!(
        "node {} of cluster {} is now the only voter of {} group(s):",
        report.node_id,
        report.cluster_id,
        report.groups.len()
    );
    for (group, term) in &report.groups {
        let what = if *group == 0 { "metadata".to_string() } else { format!("partition group {group}") };
        println!("  {what}: new membership in term {term}");
    }
    if !report.empty_groups.is_empty() {
        println!(
            "lost: groups {:?} have a replica here with no log (nothing to serve); delete their topics and \
             create them again",
            report.empty_groups
        );
    }
    println!(
        "Start the node as usual (`chronik-server cluster`). Once it is up, every other node is removed and this \
         node is the only replica of the partitions listed. Add new nodes (new ids, seeds naming this node), then \
         move partitions onto them to replicate again."
    );
    Ok(0)
}
