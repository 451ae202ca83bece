package loadgen

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procSampler follows the milter's process during a run: CPU time from
// /proc/PID/stat (utime + stime, every thread), resident memory from
// /proc/PID/status sampled every 20 ms, and the kernel's own peak (VmHWM),
// which is reset at the start of the run when /proc/PID/clear_refs can be
// written (owner or root), so that it is this run's peak, not the
// process's lifetime peak.
type procSampler struct {
	pid      int
	ticks0   uint64
	hwmReset bool

	stopc chan struct{}
	done  sync.WaitGroup

	mu         sync.Mutex
	maxRSS     uint64 // kB
	maxThreads int
}

func startProc(pid int) (*procSampler, error) {
	t, err := procTicks(pid)
	if err != nil {
		return nil, fmt.Errorf("milter process %d: %w", pid, err)
	}
	p := &procSampler{pid: pid, ticks0: t, stopc: make(chan struct{})}
	// "5" resets the peak RSS counter (Documentation/filesystems/proc.rst).
	p.hwmReset = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
	p.sample()
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-p.stopc:
				return
			case <-tk.C:
				p.sample()
			}
		}
	}()
	return p, nil
}

func (p *procSampler) sample() {
	st, err := procStatus(p.pid)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.maxRSS = max(p.maxRSS, st["VmRSS"])
	p.maxThreads = max(p.maxThreads, int(st["Threads"]))
	p.mu.Unlock()
}

// stop ends the sampling and fills in the report's process figures.
func (p *procSampler) stop(r *Report) {
	close(p.stopc)
	p.done.Wait()
	p.sample()
	if t, err := procTicks(p.pid); err == nil {
		r.MilterCPU = float64(t-p.ticks0) / float64(clockTicks())
		if r.Messages > 0 {
			r.MilterCPUPer1000 = r.MilterCPU / float64(r.Messages) * 1000
		}
	}
	st, _ := procStatus(p.pid)
	r.RSSEndKB = st["VmRSS"]
	r.HWMReset = p.hwmReset
	r.PeakRSSKB = p.maxRSS
	if p.hwmReset {
		r.PeakRSSKB = max(r.PeakRSSKB, st["VmHWM"])
	} else {
		r.LifetimeHWMKB = st["VmHWM"]
	}
	r.MaxThreads = p.maxThreads
}

// procTicks returns utime + stime of a process, in clock ticks.
func procTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("cannot parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ")": state is field 3 of stat(5), so utime (14) and stime
	// (15) are at 11 and 12.
	if len(f) < 13 {
		return 0, fmt.Errorf("cannot parse /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cannot parse /proc/%d/stat", pid)
	}
	return u + s, nil
}

// procStatus returns the numeric fields of /proc/PID/status (kB for the
// Vm* ones).
func procStatus(pid int) (map[string]uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		if n, err := strconv.ParseUint(fs[0], 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, nil
}

var (
	clkOnce sync.Once
	clk     uint64
)

// clockTicks is the kernel's USER_HZ (sysconf(_SC_CLK_TCK)), read from the
// auxiliary vector (AT_CLKTCK); 100 if that cannot be read.
func clockTicks() uint64 {
	clkOnce.Do(func() {
		clk = 100
		b, err := os.ReadFile("/proc/self/auxv")
		if err != nil || strconv.IntSize != 64 {
			return
		}
		const atClkTck = 17
		for len(b) >= 16 {
			k, v := binary.NativeEndian.Uint64(b), binary.NativeEndian.Uint64(b[8:])
			if k == atClkTck && v > 0 {
				clk = v
				return
			}
			b = b[16:]
		}
	})
	return clk
}

// selfCPU is the CPU time this process (the driver) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// systemBusy is the machine's busy CPU time since boot, from the first
// line of /proc/stat (user nice system idle iowait irq softirq steal ...).
func systemBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy uint64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / time.Duration(clockTicks())
}
