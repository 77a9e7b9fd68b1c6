//! Enlace's one end-to-end test binary: everything here runs on loopback against real
//! parts (the real router on 127.0.0.1:0, a real SQLite store, real HTTP targets, the real
//! `enlace` binary, a real SMTP server).

mod cli;
mod contracts;
mod polling;
mod recipes;
mod runner;
mod scale;
mod server;
mod smtp;
mod support;
