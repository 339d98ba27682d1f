-- agent.lua: a wrk script that POSTs valid agent reports (POST /api/v1/agent/messages), for
-- tests/bench/ingest.sh. The agent token is read from the environment (GB_BENCH_TOKEN), the
-- rest from the script's arguments (wrk ... -s agent.lua URL -- MODE PREFIX K COUNT [THREADS]):
--
--   stream PREFIX K D   every wrk thread drives its own D devices, round-robin: each request
--                       carries the next K messages of one device (seqs 1, 2, 3 ... per device,
--                       strictly increasing over the run, so every message is new). With D well
--                       above the thread's connections a device's next request is built long
--                       after its previous one was answered: one request in flight per device,
--                       as a real agent does.
--   devices PREFIX K N T  every request is a new device carrying its first K messages; wrk's T
--                       threads (-t T) share N devices and stop once all of theirs are
--                       answered (requests beyond that are GET /healthz). wrk itself still
--                       waits for its -d: interrupt it (SIGINT) once the server holds them.
--
-- A device's messages are those of a technician-flow pre-provisioning in stage mode: hello, the
-- stages from oobe to preparing_mdm started then succeeded, device_setup started, then the app
-- downloads of device setup (app downloading, download samples, app installing, app installed)
-- for as long as the run lasts. Messages are 100-350 bytes of JSON, as the simulator's are.
--
-- At the end one line "GB_WRK key=value ..." gives the requests answered, status errors (>= 400),
-- socket errors, the duration (us) and the latency percentiles (us).

local mode, prefix, per_req, count
local tid = 0          -- this thread's number, from 1
local first_call = false
local next_dev = 0     -- stream: the device the next request is for; devices: devices posted
local next_seq = {}    -- stream: per device, the next seq to send
local answered = 0     -- devices: agent requests answered in this thread
local quota = 0        -- devices: this thread's share of the devices
local path = "/api/v1/agent/messages"
local headers = {}
local base_time = 1795507200 -- 2026-11-24T00:00:00Z

local stages = {
    "oobe", "enterprise_provisioning", "profile_download", "zdp_update", "component_update",
    "device_rename", "landing", "securing_hardware", "joining_network", "registering_mdm",
    "preparing_mdm",
}
local apps = {
    { "Microsoft 365 Apps", 1610612736 }, { "Microsoft Teams", 157286400 },
    { "Company Portal", 52428800 }, { "Contoso VPN Client", 83886080 },
    { "Language Pack de-DE", 268435456 },
}
local manufacturers = {
    { "HP", "EliteBook 840 G8" }, { "LENOVO", "ThinkPad T14 Gen 3" },
    { "Dell Inc.", "Latitude 5440" }, { "Microsoft Corporation", "Surface Laptop 5" },
}
local samples_per_app = 5
local cycle = samples_per_app + 3 -- downloading, samples, installing, installed

local threads_made = 0 -- in the main Lua state only (setup)

function setup(thread)
    threads_made = threads_made + 1
    thread:set("gb_thread_number", threads_made)
end

local function at(seq)
    -- ten seconds of device clock per message
    return os.date("!%Y-%m-%dT%H:%M:%S", base_time + seq * 10) .. ".000Z"
end

local function serial(dev)
    return string.format("%s%02dD%07d", prefix, tid, dev)
end

-- The device's message number seq, as a JSON object.
local function message(dev, seq)
    local head = '{"seq":' .. seq .. ',"at":"' .. at(seq) .. '",'
    if seq == 1 then
        local hw = manufacturers[dev % #manufacturers + 1]
        return head .. '"type":"hello","agent":"glovebox-bench/1.0","os_build":"10.0.22631",' ..
            '"hardware":{"manufacturer":"' .. hw[1] .. '","model":"' .. hw[2] ..
            '","tpm_version":"2.0","tpm_attestation":true,"virtual_machine":false},' ..
            '"network":{"medium":"ethernet","link_mbps":1000},"slot":"A-' .. (dev % 24 + 1) .. '"}'
    end
    local i = seq - 2
    if i < 2 * #stages then
        local state = (i % 2 == 0) and "started" or "succeeded"
        return head .. '"type":"stage","stage":"' .. stages[math.floor(i / 2) + 1] ..
            '","state":"' .. state .. '"}'
    end
    if i == 2 * #stages then
        return head .. '"type":"stage","stage":"device_setup","state":"started"}'
    end
    i = i - 2 * #stages - 1
    local app = apps[math.floor(i / cycle) % #apps + 1]
    local step = i % cycle
    if step == 0 then
        return head .. '"type":"app","name":"' .. app[1] .. '","state":"downloading","bytes":' ..
            app[2] .. '}'
    elseif step <= samples_per_app then
        local bytes = math.floor(app[2] / samples_per_app)
        local lan = math.floor(bytes / 5)
        return head .. '"type":"download","bytes":' .. bytes .. ',"ms":10000,"http_bytes":' ..
            (bytes - lan) .. ',"lan_bytes":' .. lan .. ',"cache_bytes":0}'
    elseif step == samples_per_app + 1 then
        return head .. '"type":"app","name":"' .. app[1] .. '","state":"installing","bytes":' ..
            app[2] .. '}'
    end
    return head .. '"type":"app","name":"' .. app[1] .. '","state":"installed","bytes":' ..
        app[2] .. '}'
end

local function report(dev, from, n)
    local parts = {}
    for k = 1, n do
        parts[k] = message(dev, from + k - 1)
    end
    return wrk.format("POST", path, headers, '{"protocol":1,"device":{"serial":"' .. serial(dev) ..
        '"},"messages":[' .. table.concat(parts, ",") .. "]}")
end

-- devices mode: counts the answers to agent requests (any other answer is /healthz's).
local function agent_response(status, hdrs, body)
    if status ~= 200 or body:find('"acked_seq"', 1, true) then
        answered = answered + 1
        if answered >= quota then
            wrk.thread:stop()
        end
    end
end

function init(args)
    tid = gb_thread_number or 1
    mode, prefix, per_req, count = args[1], args[2], tonumber(args[3]), tonumber(args[4])
    local threads = tonumber(args[5] or "1")
    if (mode ~= "stream" and mode ~= "devices") or prefix == nil or per_req == nil or
        count == nil or threads == nil or per_req < 1 or count < 1 or threads < 1 then
        error("usage: wrk ... -s agent.lua URL -- stream PREFIX K D | devices PREFIX K N THREADS")
    end
    local token = os.getenv("GB_BENCH_TOKEN")
    if token == nil or token == "" then
        error("GB_BENCH_TOKEN (an agent token) is not set")
    end
    headers["Authorization"] = "Bearer " .. token
    headers["Content-Type"] = "application/json"
    -- wrk builds one request in its first thread only to check it; that one is never sent.
    first_call = (tid == 1)
    if mode == "devices" then
        quota = math.floor(count / threads)
        if tid <= count % threads then
            quota = quota + 1
        end
        response = agent_response
    else
        response = nil
    end
end

function request()
    if first_call then
        first_call = false
        return wrk.format("GET", "/healthz")
    end
    if mode == "stream" then
        local dev = next_dev
        next_dev = (next_dev + 1) % count
        local from = next_seq[dev] or 1
        next_seq[dev] = from + per_req
        return report(dev, from, per_req)
    end
    if next_dev >= quota then
        return wrk.format("GET", "/healthz")
    end
    next_dev = next_dev + 1
    return report(next_dev, 1, per_req)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("GB_WRK requests=%d status_errors=%d connect=%d read=%d write=%d " ..
        "timeout=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
        summary.requests, e.status, e.connect, e.read, e.write, e.timeout, summary.duration,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
