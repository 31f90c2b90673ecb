//! (stub until the nemesis lands)
use std::time::Duration;
pub trait FleetFaults: Send + Sync + 'static {
    fn instances(&self) -> usize;
    fn loader_fail(&self, i: usize, loads: u32);
    fn loader_hang(&self, i: usize, loads: u32);
    fn loader_panic(&self, i: usize, loads: u32);
    fn writers(&self) -> usize;
    fn writer_stall(&self, w: usize, stall: Duration);
    fn writer_die(&self, w: usize);
}
