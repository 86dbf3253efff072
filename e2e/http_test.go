package e2e

import (
	"encoding/json"
	"io"
	"net/http"
)

type response struct {
	code   int
	header http.Header
	body   []byte
}

func httpGet(url string) (response, error) {
	resp, err := http.Get(url)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}, err
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
