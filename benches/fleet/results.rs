//! The results table and the JSON the benchmark writes, and how a run is described.

use super::*;

#[derive(Default)]
pub struct Results {
    /// measure, figure, target
    rows: Vec<(String, String, String)>,
    json: serde_json::Map<String, Value>,
    skipped: Vec<String>,
}

impl Results {
    pub fn add(&mut self, key: &str, measure: String, figure: String, target: &str, value: Value) {
        eprintln!("{measure}: {figure}");
        self.rows.push((measure, figure, target.to_string()));
        self.json.insert(key.to_string(), value);
    }

    /// p50, p99 and max of a set of durations, as a row.
    pub fn latency(&mut self, key: &str, measure: String, samples: &[Duration], target: &str) {
        let (p50, p99, max) = percentiles(samples);
        self.add(
            key,
            format!("{measure} ({} samples)", samples.len()),
            format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"),
            target,
            json!({"samples": samples.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max}),
        );
    }

    pub fn skip(&mut self, why: &str) {
        self.skipped.push(why.to_string());
    }

    pub fn finish(self, path: &Path, quick: bool) {
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let fig = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        println!("\n{:<width$}  {:<fig$}  target", "measure", "figure");
        for (measure, figure, target) in &self.rows {
            println!("{measure:<width$}  {figure:<fig$}  {target}");
        }
        for why in &self.skipped {
            println!("skipped: {why}");
        }
        let mut json = Value::Object(self.json);
        json["quick"] = json!(quick);
        json["machine"] = json!(machine());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        println!("no ban lost; figures in {}", path.display());
    }
}

pub fn percentiles(samples: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.99), ms[ms.len() - 1])
}

pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_owned))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    format!("{cores} cores, {cpu}")
}
