//! `banshare import`: a blocklist's bans, a batch per request on the control socket, each
//! checked like a report (`Intake::import`), journaled and audited like one, and committed
//! and published with its batch.

use crate::clock::unix_now;
use crate::exit::Failure;
use crate::server::intake::Decision;
use crate::server::ledger;
use crate::server::reports::Said;
use crate::server::Server;
use crate::wire::control::ImportSummary;
use crate::wire::protocol::{Name, Report, Verdict};

/// The refusals an answer names, beyond which it only counts them.
const EXAMPLES: usize = 10;

impl Server {
    /// Imports `reports` in the name of `origin`, which no host's key may have: the
    /// import's bans must never pass for a host's word. Returns the batch's summary.
    pub(super) fn import(
        &mut self,
        origin: &str,
        reports: &[Report],
    ) -> Result<Result<ImportSummary, String>, Failure> {
        let origin = match Name::parse("origin", origin) {
            Ok(name) if !self.auth.keys().values().any(|n| n == name.as_str()) => name,
            Ok(name) => return Ok(Err(format!("{name} is the name of a host's key"))),
            Err(reason) => return Ok(Err(reason)),
        };
        let mut summary = ImportSummary::default();
        let mut changes = Vec::new();
        for report in reports {
            let (prog, jail) = (report.prog.as_str(), report.jail.as_str());
            let g = ledger::route(&self.ledgers, prog, jail, origin.as_str());
            let auth = &self.auth;
            let ledger = ledger::counted(&mut self.ledgers, g);
            let decided = self.intake.import(
                &ledger.config,
                &mut ledger.book,
                report,
                &origin,
                |ip| auth.fleet_host_in(ip),
                unix_now(),
            );
            let decision = decided.unwrap_or_else(|(kind, reason)| {
                *summary.refused.entry(kind.into()).or_default() += 1;
                if summary.examples.len() < EXAMPLES {
                    summary.examples.push(format!("{}: {reason}", report.ip));
                }
                Decision::Refused(reason)
            });
            let said = Said {
                what: format!("{} ({prog} {jail})", report.ip),
                key: origin.to_string(),
                from: format!("banshare import as {origin}"),
            };
            match self.settle(g, &said, decision, &mut changes)? {
                Verdict::Accepted => summary.accepted += 1,
                Verdict::Duplicate => summary.duplicate += 1,
                _ => {}
            }
        }
        self.commit()?;
        let refused: u64 = summary.refused.values().sum();
        let seq = self.publish(changes);
        log::info!(
            "import as {origin}: {} accepted, {} duplicates, {refused} refused{}",
            summary.accepted,
            summary.duplicate,
            seq.map_or(String::new(), |s| format!("; published up to seq {s}"))
        );
        Ok(Ok(summary))
    }
}
