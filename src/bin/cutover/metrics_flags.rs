//! `--metrics-addr` and `--metrics-linger`, shared by the long-running
//! commands that serve their metrics while they run (backfill, verify).

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

/// The metrics flags of a long-running command.
#[derive(clap::Args, Debug)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics here while the command runs.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// With --metrics-addr: keep serving this long after the end, so
    /// Prometheus scrapes the final values.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 15,
        requires = "metrics_addr"
    )]
    pub metrics_linger: u64,
}

/// The exporter a command serves, when it was asked for one.
pub struct Serving {
    exporter: Option<PrometheusHandle>,
    linger: u64,
}

impl MetricsArgs {
    /// Serves the metrics on `--metrics-addr` when given (says where on
    /// stderr).
    pub fn serve(&self) -> anyhow::Result<Serving> {
        let exporter = match self.metrics_addr {
            Some(addr) => {
                let handle = cutover::metrics::install_exporter(addr)?;
                eprintln!("metrics on http://{addr}/metrics");
                Some(handle)
            }
            None => None,
        };
        Ok(Serving {
            exporter,
            linger: self.metrics_linger,
        })
    }
}

impl Serving {
    /// Keeps serving `--metrics-linger` seconds after the command's end
    /// (when it serves any), so the last values are scraped.
    pub async fn linger(&self) {
        if self.exporter.is_some() && self.linger > 0 {
            eprintln!(
                "serving the final metrics for {} s more (--metrics-linger)",
                self.linger
            );
            tokio::time::sleep(Duration::from_secs(self.linger)).await;
        }
    }
}
