-- Argo CD health of a certshift object (ClusterCertificateDeclaration,
-- ObservedCertificate, CertificatePolicy: the three share this script).
-- It reads what kstatus reads, plus Ready: an edit certshift has not seen yet
-- or Reconciling=True is Progressing, Stalled=True (only a person can move it
-- on) is Degraded, Ready=True is Healthy, a declaration held by
-- spec.upgrade.paused is Suspended. Lua 5.1, base and string library only
-- (Argo CD runs it in gopher-lua).
local hs = { status = "Progressing", message = "Waiting for certshift to report status" }
if obj.status == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and generation ~= observed then
  hs.message = "Waiting for certshift to observe generation " .. generation .. " (status is of " .. observed .. ")"
  return hs
end
local ready, reconciling, stalled
for _, condition in ipairs(obj.status.conditions or {}) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Reconciling" then
    reconciling = condition
  elseif condition.type == "Stalled" then
    stalled = condition
  end
end
local function said(condition)
  return condition.reason .. ": " .. (condition.message or "")
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled)
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ready.reason
elseif ready ~= nil and ready.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = said(ready)
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.message = said(reconciling)
elseif ready ~= nil then
  hs.message = said(ready)
end
return hs
