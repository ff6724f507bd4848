//! flatnetd's liveness check, for the systemd watchdog: the parts that can
//! wedge without the process dying. A check that hangs is a failure too
//! (the watchdog runs it with a deadline).

use crate::service::SharedService;

/// `Ok` when the lease store answers under the host lock and the data
/// plane's threads are still turning.
pub fn check(service: &SharedService) -> Result<(), String> {
    service
        .health()
        .map_err(|e| format!("the lease store does not answer: {}", e.message))?;
    if let Some(why) = service.overlay().and_then(|o| o.stalled()) {
        return Err(format!("the data plane is stuck: {why}"));
    }
    Ok(())
}
