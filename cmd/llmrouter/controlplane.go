package main

import "github.com/llmrouter/llmrouter/internal/servers"

// serverAddrs are the control plane's bound addresses (internal/servers).
type serverAddrs = servers.ControlPlaneAddrs

// runControlPlane serves the scheduler and, withGateway, the gateway
// (internal/servers).
var runControlPlane = servers.ControlPlane
