// Command litemaas-control-plane is a single-binary Kubernetes control plane
// for tests and demos: it starts an embedded etcd (go.etcd.io/etcd/server/v3/embed)
// on loopback, waits until it is ready, then runs the real kube-apiserver
// command of the pinned Kubernetes release against it.
//
// Usage:
//
//	litemaas-control-plane --embedded-etcd-dir=DIR [--embedded-etcd-client-port=N]
//	    [--embedded-etcd-peer-port=N] [--embedded-etcd-unsafe-no-fsync]
//	    [--embedded-etcd-ready-timeout=60s] [kube-apiserver flags...]
//
// Every flag that does not start with --embedded-etcd- is handed to
// kube-apiserver unchanged. Unless --etcd-servers is among them, it is set to
// the embedded etcd's client URL. A port of 0 (the default) picks a free one.
// When kube-apiserver returns (e.g. after SIGTERM, which it handles itself),
// etcd is closed and the process exits with kube-apiserver's exit code.
package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata"

	"go.etcd.io/etcd/server/v3/embed"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

const prefix = "--embedded-etcd-"

type etcdOptions struct {
	dir          string
	clientPort   int
	peerPort     int
	noFsync      bool
	readyTimeout time.Duration
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "litemaas-control-plane: "+format+"\n", args...)
	os.Exit(2)
}

// splitArgs separates our --embedded-etcd-* flags from kube-apiserver's.
func splitArgs(args []string) (etcdOptions, []string) {
	opts := etcdOptions{readyTimeout: 60 * time.Second}
	var rest []string
	for _, a := range args {
		if !strings.HasPrefix(a, prefix) {
			rest = append(rest, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, prefix), "=")
		need := func() string {
			if !hasValue {
				fail("flag %s%s needs a value (use %s%s=VALUE)", prefix, name, prefix, name)
			}
			return value
		}
		port := func() int {
			p, err := strconv.Atoi(need())
			if err != nil || p < 0 || p > 65535 {
				fail("flag %s%s: bad port %q", prefix, name, value)
			}
			return p
		}
		switch name {
		case "dir":
			opts.dir = need()
		case "client-port":
			opts.clientPort = port()
		case "peer-port":
			opts.peerPort = port()
		case "unsafe-no-fsync":
			opts.noFsync = !hasValue || value == "true"
		case "ready-timeout":
			d, err := time.ParseDuration(need())
			if err != nil {
				fail("flag %sready-timeout: %v", prefix, err)
			}
			opts.readyTimeout = d
		default:
			fail("unknown flag %s", a)
		}
	}
	return opts, rest
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("finding a free loopback port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func loopbackURL(port int) url.URL {
	return url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
}

func startEtcd(opts etcdOptions) (*embed.Etcd, string) {
	if opts.dir == "" {
		fail("%sdir=DIR is required", prefix)
	}
	if opts.clientPort == 0 {
		opts.clientPort = freePort()
	}
	if opts.peerPort == 0 {
		opts.peerPort = freePort()
	}
	cfg := embed.NewConfig()
	cfg.Name = "litemaas"
	cfg.Dir = opts.dir
	client, peer := loopbackURL(opts.clientPort), loopbackURL(opts.peerPort)
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	cfg.UnsafeNoFsync = opts.noFsync

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fail("starting embedded etcd in %s: %v", opts.dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		fail("embedded etcd failed before it was ready: %v", err)
	case <-time.After(opts.readyTimeout):
		e.Server.Stop()
		e.Close()
		fail("embedded etcd was not ready after %s", opts.readyTimeout)
	}
	go func() {
		if err, ok := <-e.Err(); ok && err != nil {
			fmt.Fprintf(os.Stderr, "litemaas-control-plane: embedded etcd failed: %v\n", err)
			os.Exit(3)
		}
	}()
	return e, client.String()
}

func main() {
	opts, apiserverArgs := splitArgs(os.Args[1:])

	// Let --help / --version reach kube-apiserver without starting etcd.
	for _, a := range apiserverArgs {
		if a == "--help" || a == "-h" || strings.HasPrefix(a, "--version") {
			cmd := app.NewAPIServerCommand()
			cmd.SetArgs(apiserverArgs)
			os.Exit(cli.Run(cmd))
		}
	}

	e, clientURL := startEtcd(opts)
	hasEtcdServers := false
	for _, a := range apiserverArgs {
		if a == "--etcd-servers" || strings.HasPrefix(a, "--etcd-servers=") {
			hasEtcdServers = true
		}
	}
	if !hasEtcdServers {
		apiserverArgs = append(apiserverArgs, "--etcd-servers="+clientURL)
	}
	fmt.Fprintf(os.Stderr, "litemaas-control-plane: embedded etcd ready at %s (data %s)\n", clientURL, opts.dir)

	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(apiserverArgs)
	code := cli.Run(cmd)

	e.Close()
	os.Exit(code)
}
