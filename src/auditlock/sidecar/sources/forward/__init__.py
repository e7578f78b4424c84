"""The Fluentd Forward protocol (v1): frame decoding in `protocol`, the TCP server in `server`."""
