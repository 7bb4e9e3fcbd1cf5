// Verify a hookd `standard` webhook (Standard Webhooks) with Go's standard library.
//
//	WEBHOOK_SECRET=whsec_... go run verify_standard.go request.json
//
// request.json is a captured request, {"headers": {...}, "body": "..."}: each line that
// `hookd listen --json` prints is one. Exits 0 if the signature is valid, 1 if not.
// In an http.Handler, call Verify(secret, r.Header, body) with body read by io.ReadAll(r.Body).
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

const tolerance = 5 * time.Minute

// Verify returns nil if body (the raw bytes received) was signed with secret
// (whsec_<base64 key>) and the signed time is within 5 minutes of now.
func Verify(secret string, header http.Header, body []byte) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 {
		return errors.New("the secret is not whsec_<base64>")
	}
	id := header.Get("webhook-id")
	ts := header.Get("webhook-timestamp")
	signatures := header.Get("webhook-signature")
	if id == "" || ts == "" || signatures == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	seconds, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("webhook-timestamp is not unix seconds")
	}
	if age := time.Since(time.Unix(seconds, 0)); age > tolerance || age < -tolerance {
		return errors.New("webhook-timestamp is too far from now")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	expected := mac.Sum(nil)
	// Several space-separated "v1,<base64>" entries may be sent (during a key rotation).
	for _, entry := range strings.Fields(signatures) {
		version, signature, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		given, err := base64.StdEncoding.DecodeString(signature)
		if err == nil && hmac.Equal(given, expected) {
			return nil
		}
	}
	return errors.New("no matching signature")
}

func main() {
	secret := os.Getenv("WEBHOOK_SECRET")
	if secret == "" {
		fmt.Fprintln(os.Stderr, "set WEBHOOK_SECRET to the endpoint's secret")
		os.Exit(2)
	}
	var input io.Reader = os.Stdin
	if len(os.Args) > 1 {
		f, err := os.Open(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer f.Close()
		input = f
	}
	var request struct {
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	}
	if err := json.NewDecoder(input).Decode(&request); err != nil {
		fmt.Fprintln(os.Stderr, "cannot read the request:", err)
		os.Exit(2)
	}
	header := http.Header{}
	for name, value := range request.Headers {
		header.Set(name, value)
	}
	if err := Verify(secret, header, []byte(request.Body)); err != nil {
		fmt.Fprintln(os.Stderr, "invalid:", err)
		os.Exit(1)
	}
	fmt.Printf("valid: %s: %s\n", header.Get("webhook-id"), request.Body)
}
