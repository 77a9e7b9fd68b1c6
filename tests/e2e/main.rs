//! Enlace's one end-to-end test binary: everything here runs on loopback against real
//! parts (the real router on 127.0.0.1:0, a real SQLite store, real HTTP targets, the real
//! `enlace` binary, a real SMTP server).

// First: its macros (`on_both_backends!`) are used by the modules below.
#[macro_use]
mod support;

mod ads;
mod cli;
mod contacts;
mod contracts;
mod declarative;
mod drive_recipe;
mod gdpr;
mod journeys;
mod oauth;
mod policy;
mod polling;
mod recipes;
mod runner;
mod scale;
mod server;
mod shipped;
mod simulate;
mod smtp;
mod social;
mod timeline;
mod track;
mod twilio;
mod ui;
mod ui_journeys;
mod web_channel;
