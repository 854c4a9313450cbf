//! A program with no signals at all: what process start-up costs without us. `scale` runs it
//! next to itself to show that 5,000 registered handlers add nothing to start-up.

fn main() {}
