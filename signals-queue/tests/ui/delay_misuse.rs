use signals_core::{on, Signal};

#[derive(Signal, serde::Serialize, serde::Deserialize)]
pub struct UserSignedUp;

#[on(UserSignedUp, delay = "3d")]
fn not_queued(_signal: &UserSignedUp) {}

#[on(UserSignedUp, queue, delay = "three days")]
fn unreadable(_signal: &UserSignedUp) {}

#[on(UserSignedUp, queue, delay = "0s")]
fn zero(_signal: &UserSignedUp) {}

#[on(UserSignedUp, publish = "users.signed_up", delay = "1h")]
fn published(_signal: &UserSignedUp) -> u32 {
    1
}

fn main() {}
