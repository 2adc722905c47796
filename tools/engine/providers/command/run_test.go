package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"golang.org/x/crypto/ssh"
)

func TestLocalRunSeesItsInputsAndThePreviousOutput(t *testing.T) {
	dir := t.TempDir()
	m := props("interpreter", []any{"/bin/bash", "-c"}, "dir", dir, "stdin", "from stdin\n",
		"environment", map[string]any{"GREETING": "hello"})
	sp := mustSpec(t, localCommand, m)
	script := `echo "$GREETING $(cat) in $PWD prev=$PULUMI_COMMAND_STDOUT/$PULUMI_COMMAND_STDERR $BASH_VERSION" | ` +
		`cut -c1-200; echo warn >&2`
	var logged []string
	out, errOut, err := runLocal(context.Background(), sp, script, previous{"old-out", "old-err"},
		func(l string) { logged = append(logged, l) })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "hello from stdin in "+dir+" prev=old-out/old-err 5.") {
		t.Errorf("stdout = %q", out)
	}
	if errOut != "warn" || strings.HasSuffix(out, "\n") {
		t.Errorf("stdout %q stderr %q: one trailing newline each is dropped", out, errOut)
	}
	if len(logged) != 2 {
		t.Errorf("logged %q", logged)
	}
	m["addPreviousOutputInEnv"] = resource.NewBoolProperty(false)
	m["logging"] = resource.NewStringProperty("none")
	logged = nil
	out, _, err = runLocal(context.Background(), mustSpec(t, localCommand, m),
		`echo "prev=${PULUMI_COMMAND_STDOUT-unset}"`, previous{"old-out", ""}, func(l string) { logged = append(logged, l) })
	if err != nil || out != "prev=unset" || len(logged) != 0 {
		t.Errorf("out=%q err=%v logged=%q", out, err, logged)
	}
}

func TestLocalDefaultInterpreterIsSh(t *testing.T) {
	// With -c and no further argument, $0 is the name the shell was started as.
	out, _, err := runLocal(context.Background(), mustSpec(t, localCommand, props()), `echo "$0"`, previous{}, nil)
	if err != nil || out != "/bin/sh" {
		t.Errorf("out=%q err=%v", out, err)
	}
}

func TestLocalFailureSaysWhatRanAndHidesSecrets(t *testing.T) {
	m := props("stdin", "x")
	m["create"] = resource.MakeSecret(resource.NewStringProperty("echo token=abc123secret >&2; exit 3"))
	sp := mustSpec(t, localCommand, m)
	_, _, err := runLocal(context.Background(), sp, *sp.create, previous{}, nil)
	if err == nil {
		t.Fatal("a failing command succeeded")
	}
	msg := err.Error()
	if strings.Contains(msg, "abc123secret") || !strings.Contains(msg, "exit status 3") ||
		!strings.Contains(msg, "running [secret] (the command is secret, so its output is not shown)") {
		t.Errorf("error = %q", msg)
	}
	// A secret stdin: blanked out where it is echoed, the rest of the output shown.
	m = props("create", "cat >&2; echo oops >&2; false")
	m["stdin"] = resource.MakeSecret(resource.NewStringProperty("s3cr3t-value\n"))
	sp = mustSpec(t, localCommand, m)
	var logged []string
	_, _, err = runLocal(context.Background(), sp, *sp.create, previous{}, func(l string) { logged = append(logged, l) })
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "[secret]\noops") ||
		strings.Contains(strings.Join(logged, "\n"), "s3cr3t") || len(logged) != 2 {
		t.Errorf("error = %v, logged %q", err, logged)
	}
	_, _, err = runLocal(context.Background(), mustSpec(t, localCommand, props()), "echo oops >&2; false", previous{}, nil)
	if err == nil || !strings.Contains(err.Error(), `running "echo oops >&2; false"`) ||
		!strings.Contains(err.Error(), "oops") {
		t.Errorf("error = %v", err)
	}
}

// sshServer is a minimal SSH server on 127.0.0.1 for the remote runner: it accepts one client key,
// answers exec requests with what it was sent, and counts connections and commands.
type sshServer struct {
	addr      string
	hostKey   ssh.PublicKey
	acceptEnv map[string]bool
	mu        sync.Mutex
	conns     int
	commands  []string
	env       map[string]string
	ln        net.Listener
}

func newSSHServer(t *testing.T, client ssh.PublicKey, acceptEnv ...string) *sshServer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(client.Marshal()) {
			return nil, nil
		}
		return nil, fmt.Errorf("unknown key")
	}}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sshServer{addr: ln.Addr().String(), hostKey: signer.PublicKey(), ln: ln, env: map[string]string{},
		acceptEnv: map[string]bool{}}
	for _, e := range acceptEnv {
		s.acceptEnv[e] = true
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			go s.serve(c, cfg)
		}
	}()
	return s
}

func (s *sshServer) serve(c net.Conn, cfg *ssh.ServerConfig) {
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		c.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer ch.Close()
			for r := range creqs {
				switch r.Type {
				case "env":
					var kv struct{ Name, Value string }
					_ = ssh.Unmarshal(r.Payload, &kv)
					s.mu.Lock()
					ok := s.acceptEnv[kv.Name]
					if ok {
						s.env[kv.Name] = kv.Value
					}
					s.mu.Unlock()
					_ = r.Reply(ok, nil)
				case "exec":
					var cmd struct{ Command string }
					_ = ssh.Unmarshal(r.Payload, &cmd)
					_ = r.Reply(true, nil)
					in, _ := io.ReadAll(ch)
					s.mu.Lock()
					s.commands = append(s.commands, cmd.Command)
					env := fmt.Sprint(s.env)
					s.mu.Unlock()
					fmt.Fprintf(ch, "ran %s with stdin %q env %s\n", cmd.Command, in, env)
					fmt.Fprintf(ch.Stderr(), "note\n")
					status := make([]byte, 4)
					binary.BigEndian.PutUint32(status, 0)
					_, _ = ch.SendRequest("exit-status", false, status)
					return
				default:
					_ = r.Reply(false, nil)
				}
			}
		}()
	}
}

func clientKey(t *testing.T) (string, ssh.PublicKey) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	return string(pem.EncodeToMemory(block)), signer.PublicKey()
}

func remoteSpec(t *testing.T, addr, key, hostKey string, extra ...any) *spec {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	var p float64
	fmt.Sscan(port, &p)
	conn := map[string]any{"host": host, "port": p, "user": "tester", "privateKey": key, "dialErrorLimit": 2.0}
	if hostKey != "" {
		conn["hostKey"] = hostKey
	}
	m := props(extra...)
	m["connection"] = resource.NewPropertyValue(conn)
	checked, failures := check(remoteCommand, m)
	if len(failures) > 0 {
		t.Fatalf("check: %v", failures)
	}
	return mustSpec(t, remoteCommand, checked)
}

func authorized(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func TestRemoteRunWithThePinnedHostKey(t *testing.T) {
	key, pub := clientKey(t)
	srv := newSSHServer(t, pub, "GREETING")
	sp := remoteSpec(t, srv.addr, key, authorized(srv.hostKey), "stdin", "payload",
		"environment", map[string]any{"GREETING": "hi"})
	var warnings []string
	out, errOut, err := runRemote(context.Background(), dialer{}, sp, "make it so", previous{stdout: "before"},
		nil, func(w string) { warnings = append(warnings, w) })
	if err != nil {
		t.Fatal(err)
	}
	if out != `ran make it so with stdin "payload" env map[GREETING:hi]` || errOut != "note" {
		t.Errorf("stdout %q stderr %q", out, errOut)
	}
	// PULUMI_COMMAND_STDOUT is refused by this server: a warning, and the command runs anyway.
	if len(warnings) != 1 || !strings.Contains(warnings[0], "PULUMI_COMMAND_STDOUT") {
		t.Errorf("warnings %q", warnings)
	}
}

func TestRemoteRefusesAWrongHostKeyAtOnceAndRunsNothing(t *testing.T) {
	key, pub := clientKey(t)
	srv := newSSHServer(t, pub)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(other)
	sp := remoteSpec(t, srv.addr, key, authorized(otherSigner.PublicKey()))
	var rec recorder
	start := time.Now()
	_, _, err := runRemote(context.Background(), dialer{sleep: rec.sleep}, sp, "touch /marker", previous{}, nil, nil)
	if err == nil {
		t.Fatal("connected to a host whose key does not match")
	}
	msg := err.Error()
	for _, want := range []string{"host key verification failed for " + srv.addr,
		ssh.FingerprintSHA256(srv.hostKey), ssh.FingerprintSHA256(otherSigner.PublicKey()), "nothing was run"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.conns != 1 || len(rec.waits) != 0 || len(srv.commands) != 0 {
		t.Errorf("connections %d, waits %v, commands %q: a mismatch is not retried and runs nothing",
			srv.conns, rec.waits, srv.commands)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
}

func TestRemoteRefusesAHostKeyOfATypeTheServerLacks(t *testing.T) {
	key, pub := clientKey(t)
	srv := newSSHServer(t, pub)
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubRSA, err := ssh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := authorized(pubRSA)
	sp := remoteSpec(t, srv.addr, key, rsaKey)
	var rec recorder
	_, _, err = runRemote(context.Background(), dialer{sleep: rec.sleep}, sp, "true", previous{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "offers no ssh-rsa host key") || len(rec.waits) != 0 {
		t.Errorf("err=%v waits=%v", err, rec.waits)
	}
}

func TestRemoteRefusedEnvironmentIsAnError(t *testing.T) {
	key, pub := clientKey(t)
	srv := newSSHServer(t, pub)
	sp := remoteSpec(t, srv.addr, key, authorized(srv.hostKey), "environment", map[string]any{"TOKEN": "x"})
	_, _, err := runRemote(context.Background(), dialer{}, sp, "true", previous{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), `could not set environment variable "TOKEN"`) ||
		!strings.Contains(err.Error(), "AcceptEnv") {
		t.Errorf("err = %v", err)
	}
}

func TestRemoteDialRetriesOnTheScheduleThenGivesUp(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: every dial is refused
	key, _ := clientKey(t)
	sp := remoteSpec(t, addr, key, "")
	var rec recorder
	var status []string
	_, _, err := runRemote(context.Background(), dialer{sleep: rec.sleep, status: func(s string) {
		status = append(status, s)
	}}, sp, "true", previous{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "after 3 failed attempts") {
		t.Fatalf("err = %v", err)
	}
	if len(rec.waits) != 2 || rec.waits[0] != 100*time.Millisecond || rec.waits[1] != 150*time.Millisecond {
		t.Errorf("waits %v", rec.waits)
	}
	if len(status) != 2 || !strings.Contains(status[0], "try 1 of 3 failed") {
		t.Errorf("status %q", status)
	}
}
