-- Argo CD health check for session-operator.io/Session.
--
-- Install it as argocd-cm key resource.customizations.health.session-operator.io_Session
-- (see the chart's README). It runs in Argo CD's Lua sandbox (gopher-lua, Lua 5.1,
-- base and table libraries only), so it uses no string functions.
--
--   Active                                        Healthy
--   Pending, Queued                               Progressing
--   Rejected, Invalid                             Degraded
--   Inactive                                      Suspended
--   Replaced, Completed, Abandoned, Archived      Healthy
--   no status yet, or a spec change not yet seen  Progressing
--
-- The message is the Ready condition's, which names the session in the way.

-- Surface deletion progress while the resource is terminating.
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  local deletionHs = {}
  deletionHs.status = "Progressing"
  deletionHs.message = "Pending deletion"
  if obj.metadata.finalizers ~= nil and #obj.metadata.finalizers > 0 then
    deletionHs.message = "Pending deletion; blocked by finalizers: " .. table.concat(obj.metadata.finalizers, ", ")
  end
  return deletionHs
end

local health = {
  Active = "Healthy",
  Pending = "Progressing",
  Queued = "Progressing",
  Rejected = "Degraded",
  Invalid = "Degraded",
  Inactive = "Suspended",
  Replaced = "Healthy",
  Completed = "Healthy",
  Abandoned = "Healthy",
  Archived = "Healthy",
}

local function conditionMessage(status, conditionType)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == conditionType and condition.message ~= nil and condition.message ~= "" then
      return condition.message
    end
  end
  return nil
end

local hs = {}
local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to decide on this Session"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to evaluate generation " .. generation .. " (status is for generation " .. status.observedGeneration .. ")"
  return hs
end

local phase = status.phase
hs.status = health[phase]
if hs.status == nil then
  hs.status = "Unknown"
end
hs.message = conditionMessage(status, "Ready") or conditionMessage(status, "Stalled")
  or conditionMessage(status, "Reconciling") or ("Phase " .. phase)
return hs
