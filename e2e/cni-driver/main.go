// Command enipool-cni-driver runs a CNI network list through libcni, the library containerd and
// CRI-O use, so the e2e platform wires pods the way a container runtime does.
//
// Usage: enipool-cni-driver add|check|del <conflist-name-or-path> <containerID> <netnsPath> <ifName>
//
// A conflist of "-" chooses the network as a container runtime does: ADD runs the first *.conflist
// of NETCONFPATH by file name (containerd and CRI-O take the first config in lexical order); CHECK
// and DEL run the config libcni cached at this container's ADD (CRI-O's teardown), else the
// first one.
//
// Environment:
//   NETCONFPATH  directory holding *.conflist files (when the second argument is a name)
//   CNI_PATH     plugin search path, colon-separated
//   CNI_CACHEDIR libcni's result cache (default: a "cache" directory next to NETCONFPATH)
//   CAP_ARGS     JSON object of capability args, e.g. {"portMappings":[...]}
//   CNI_ARGS     pod args, "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=name;..."
//
// ADD prints the result JSON on stdout; CHECK and DEL print nothing. On failure the error goes to
// stderr and the exit status is 1 (2 for a usage error).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: enipool-cni-driver add|check|del <conflist> <containerID> <netnsPath> <ifName>")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(cmd, conf, containerID, netns, ifName string) error {
	confDir := os.Getenv("NETCONFPATH")
	cacheDir := os.Getenv("CNI_CACHEDIR")
	if cacheDir == "" {
		cacheDir = filepath.Join(confDir, "..", "cache")
	}
	var list *libcni.NetworkConfigList
	var err error
	if conf == "-" {
		list, err = runtimeList(confDir, cacheDir, cmd, containerID, ifName)
	} else {
		list, err = loadList(confDir, conf)
	}
	if err != nil {
		return fmt.Errorf("loading network list %q: %w", conf, err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), cacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: ifName}
	// Like containerd (go-cni), so plugins ignore pod args they do not know.
	rt.Args = append(rt.Args, [2]string{"IgnoreUnknown", "1"})
	if s := os.Getenv("CAP_ARGS"); s != "" {
		if err := json.Unmarshal([]byte(s), &rt.CapabilityArgs); err != nil {
			return fmt.Errorf("CAP_ARGS is not a JSON object: %w", err)
		}
	}
	for _, kv := range strings.Split(os.Getenv("CNI_ARGS"), ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("CNI_ARGS entry %q is not KEY=VALUE", kv)
		}
		rt.Args = append(rt.Args, [2]string{k, v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	switch cmd {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		return result.Print()
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return cni.DelNetworkList(ctx, list, rt)
	default:
		return fmt.Errorf("unknown command %q (want add, check or del)", cmd)
	}
}

// runtimeList picks the network list as a runtime does (see the usage above).
func runtimeList(confDir, cacheDir, cmd, containerID, ifName string) (*libcni.NetworkConfigList, error) {
	if cmd != "add" {
		cached, _ := filepath.Glob(filepath.Join(cacheDir, "results", "*-"+containerID+"-"+ifName))
		if len(cached) == 1 {
			data, err := os.ReadFile(cached[0])
			if err != nil {
				return nil, err
			}
			var info struct {
				Config []byte `json:"config"`
			}
			if err := json.Unmarshal(data, &info); err != nil {
				return nil, fmt.Errorf("cached result %s: %w", cached[0], err)
			}
			if len(info.Config) > 0 {
				return libcni.ConfListFromBytes(info.Config)
			}
		}
	}
	files, err := libcni.ConfFiles(confDir, []string{".conflist"})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("cni plugin not initialized: no network config in %s", confDir)
	}
	return libcni.ConfListFromFile(files[0])
}

// loadList reads a conflist from a path, or by network name from confDir.
func loadList(confDir, conf string) (*libcni.NetworkConfigList, error) {
	if strings.ContainsRune(conf, os.PathSeparator) {
		return libcni.ConfListFromFile(conf)
	}
	return libcni.LoadConfList(confDir, conf)
}
