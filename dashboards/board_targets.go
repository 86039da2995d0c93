package dashboards

import (
	"fmt"

	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/chimeraforge/chimeraforge/exporters/gpu"
)

// targetsBoard shows the Ollama servers (what they have loaded, and where)
// and the GPUs under them.
func targetsBoard() (Board, error) {
	target := match(exporters.LabelTarget)
	// GPU series are filtered by GPU only: their target label, where there
	// is one, names the process's server, not a request target.
	device := match(gpu.LabelGPU)
	const perTarget = "{{target}}"
	const perModel = "{{target}} {{model}}"
	const perGPU = "GPU {{gpu}} {{name}}"

	l := newBoard(UIDTargets, "Chimeraforge / Targets & GPU",
		"The Ollama servers the daemon polls (up, loaded models and how much of each sits in GPU memory) and the GPUs NVML reports.")
	l.db.
		WithVariable(datasourceVar()).
		WithVariable(labelVar(exporters.LabelTarget, exporters.MetricOllamaUp)).
		WithVariable(labelVar(gpu.LabelGPU, gpu.MetricUtilizationRatio)).
		Annotation(versionChangeAnnotation())

	l.row("Ollama servers",
		statPanel("Ollama up", unitShort,
			fmt.Sprintf("Up when the last poll of the target's /api/version and /api/ps succeeded, down when it failed (%s, 1 or 0). "+
				"Polled every targets[].poll_interval, 15s by default.", exporters.MetricOllamaUp),
			query(sel(exporters.MetricOllamaUp, target), perTarget)).
			Span(8).Height(6).
			Mappings(upDown()),
		timeseriesPanel("Loaded models", unitShort,
			fmt.Sprintf("Number of models each target has loaded, the entries of /api/ps (%s); absent while the target is down.", exporters.MetricOllamaLoadedModels),
			query(sel(exporters.MetricOllamaLoadedModels, target), perTarget)).
			Span(8).Height(6),
		timeseriesPanel("Probe duration", unitSeconds,
			fmt.Sprintf("How long the last poll of the target's /api/version and /api/ps took (%s).", exporters.MetricOllamaProbeDurationSeconds),
			query(sel(exporters.MetricOllamaProbeDurationSeconds, target), perTarget)).
			Span(8).Height(6),
		statPanel("Model share in VRAM", unitRatio,
			fmt.Sprintf("Share of each loaded model in GPU memory, /api/ps size_vram ÷ size (%s). "+
				"Orange below 1: the model partly spilled to CPU memory and runs many times slower, the most common silent regression after an upgrade; red at 0, CPU only.",
				exporters.MetricOllamaModelVRAMRatio),
			query(sel(exporters.MetricOllamaModelVRAMRatio, target), perModel)).
			Span(8).
			Min(0).Max(1).
			Thresholds(thresholds("red", step{0.001, "orange"}, step{1, "green"})),
		timeseriesPanel("Model size and VRAM", unitBytes,
			fmt.Sprintf("Size of each loaded model (/api/ps size, %s) and the part of it in GPU memory (size_vram, %s). "+
				"Where the two lines differ, the rest of the model is in CPU memory.",
				exporters.MetricOllamaModelSizeBytes, exporters.MetricOllamaModelVRAMBytes),
			query(sel(exporters.MetricOllamaModelSizeBytes, target), perModel+" size"),
			query(sel(exporters.MetricOllamaModelVRAMBytes, target), perModel+" in VRAM")).
			Span(16),
		timeseriesPanel("Context length", unitTokens,
			fmt.Sprintf("Context length each loaded model was loaded with (/api/ps context_length, %s); a request with another num_ctx reloads the model.",
				exporters.MetricOllamaModelContextLength),
			query(sel(exporters.MetricOllamaModelContextLength, target), perModel)),
		timeseriesPanel("Model loads and unloads", unitPerSecond,
			fmt.Sprintf("Models per second that a poll sees newly loaded (%s) or gone (%s), per target. "+
				"Loads and unloads that cancel out between two polls are not seen; a steady rate means models evict each other.",
				exporters.MetricOllamaModelLoadsTotal, exporters.MetricOllamaModelUnloadsTotal),
			query(fmt.Sprintf("sum by (target) (%s)", rate(exporters.MetricOllamaModelLoadsTotal, target)), perTarget+" loads"),
			query(fmt.Sprintf("sum by (target) (%s)", rate(exporters.MetricOllamaModelUnloadsTotal, target)), perTarget+" unloads")),
	)

	l.row("GPU",
		statPanel("GPU collector up", unitShort,
			fmt.Sprintf("Up when NVML initialised and the GPU collector reads devices, down when it is disabled: no NVIDIA library, driver or GPU (%s). "+
				"While it is down every other GPU panel is empty; the demo exports a simulated GPU.", gpu.MetricCollectorUp),
			query(gpu.MetricCollectorUp, "GPU collector")).
			Span(4).
			Mappings(upDown()),
		timeseriesPanel("GPU utilization", unitRatio,
			fmt.Sprintf("Fraction of NVML's last sample period during which a kernel ran, per GPU (%s). %s", gpu.MetricUtilizationRatio, gpuEmpty),
			query(sel(gpu.MetricUtilizationRatio, device), perGPU)).
			Span(10).
			Min(0).Max(1),
		timeseriesPanel("GPU memory", unitBytes,
			fmt.Sprintf("GPU memory allocated (%s) and the total (%s), per GPU. %s", gpu.MetricMemoryUsedBytes, gpu.MetricMemoryTotalBytes, gpuEmpty),
			query(sel(gpu.MetricMemoryUsedBytes, device), perGPU+" used"),
			query(sel(gpu.MetricMemoryTotalBytes, device), perGPU+" total")).
			Span(10),
		timeseriesPanel("GPU power", unitWatts,
			fmt.Sprintf("Power the board draws (%s) and the limit the driver enforces (%s), per GPU; at the limit the clocks are held down (sw_power_cap). %s",
				gpu.MetricPowerWatts, gpu.MetricPowerLimitWatts, gpuEmpty),
			query(sel(gpu.MetricPowerWatts, device), perGPU+" power"),
			query(sel(gpu.MetricPowerLimitWatts, device), perGPU+" limit")),
		timeseriesPanel("GPU temperature", unitCelsius,
			fmt.Sprintf("GPU core temperature per GPU (%s); the dashed line is the %g °C of the ChimeraforgeGPUHot alert. %s",
				gpu.MetricTemperatureCelsius, DefaultThresholds.GPUTemperature, gpuEmpty),
			query(sel(gpu.MetricTemperatureCelsius, device), perGPU)).
			Thresholds(thresholds("green", step{DefaultThresholds.GPUTemperature, "red"})).
			ThresholdsStyle(thresholdLines()),
		timeseriesPanel("SM clock", unitHertz,
			fmt.Sprintf("Current SM clock per GPU (%s); it drops while a throttle reason holds it down. %s", gpu.MetricSMClockHertz, gpuEmpty),
			query(sel(gpu.MetricSMClockHertz, device), perGPU)),
		// Every reason is exported at 0 or 1 on every scrape, so the panel
		// shows each one's state rather than only the reasons at 1, which
		// a busy GPU may never have.
		stateTimelinePanel("Throttle reasons", unitShort,
			fmt.Sprintf("Each throttle reason of each GPU over time, red while it holds the clocks down (%s = 1). "+
				"gpu_idle is normal on an idle GPU; thermal, power and hardware slowdowns hold down every figure measured on it. %s",
				gpu.MetricThrottleReasons, gpuEmpty),
			query(fmt.Sprintf("max by (gpu, reason) (%s)", sel(gpu.MetricThrottleReasons, device)), "GPU {{gpu}} {{reason}}")).
			Mappings(boolMapping("clear", "transparent", "holding clocks down", "red")),
		timeseriesPanel("GPU memory per process", unitBytes,
			fmt.Sprintf("GPU memory of each process on the selected GPUs, by PID and the Ollama target whose server it is (%s); the target is empty when no target's server owns the process. %s",
				gpu.MetricProcessMemoryBytes, gpuEmpty),
			query(fmt.Sprintf("sum by (pid, target) (%s)", sel(gpu.MetricProcessMemoryBytes, device)), "{{target}} pid {{pid}}")).
			Span(gridWidth),
	)

	return l.build("chimeraforge-targets.json")
}
