// Verify a hookd `toss` webhook with Go's standard library.
//
//	WEBHOOK_SECRET=... go run verify_toss.go request.json
//
// request.json is a captured request, {"headers": {...}, "body": "..."}: each line that
// `hookd listen --json` prints is one. Exits 0 if the signature is valid, 1 if not.
// In an http.Handler, call Verify(secret, r.Header, body) with body read by io.ReadAll(r.Body).
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

const tolerance = 5 * time.Minute

// Verify returns nil if body (the raw bytes received) was signed with secret (its UTF-8
// bytes are the key) and the transmission time is within 5 minutes of now.
func Verify(secret string, header http.Header, body []byte) error {
	sent := header.Get("tosspayments-webhook-transmission-time")
	signature := header.Get("tosspayments-webhook-signature")
	if sent == "" || signature == "" {
		return errors.New("missing tosspayments-webhook-transmission-time or -signature")
	}
	// Optional, and recommended: refuse replays of old requests.
	at, err := time.Parse(time.RFC3339Nano, sent)
	if err != nil {
		return errors.New("the transmission time is not RFC 3339")
	}
	if age := time.Since(at); age > tolerance || age < -tolerance {
		return errors.New("the transmission time is too far from now")
	}
	given, err := hex.DecodeString(strings.TrimSpace(signature))
	if err != nil {
		return errors.New("the signature is not hex")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	mac.Write([]byte(":" + sent))
	if !hmac.Equal(given, mac.Sum(nil)) {
		return errors.New("no matching signature")
	}
	return nil
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
