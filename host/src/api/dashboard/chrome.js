// @ts-check
// The page around the views: the error banner, the toast, the live marker, the confirmation
// dialog, and running an operator's action with its outcome as a toast.

import { $ } from './dom.js';
import { POLL_MS } from './poll.js';

/** An error's message, for the operator. @param {unknown} err */
export const errorMessage = (err) => (err instanceof Error ? err.message : String(err));

/** @param {string} message */
export function showBanner(message) {
  const banner = $('#banner', HTMLElement);
  banner.textContent = message;
  banner.hidden = false;
}

export function clearBanner() {
  $('#banner', HTMLElement).hidden = true;
}

let toastTimer = 0;
/** @param {string} message */
export function toast(message, { error = false } = {}) {
  const el = $('#toast', HTMLElement);
  el.textContent = message;
  el.className = `toast shown${error ? ' error' : ''}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = 'toast'; }, error ? 8000 : 4000);
}

/** The marker at the top right: "live", or "stale" with the last refresh's error.
 *  @param {boolean} ok @param {unknown} [error] */
export function setLive(ok, error) {
  const el = $('#live', HTMLElement);
  el.classList.toggle('stale', !ok);
  el.textContent = ok ? 'live' : 'stale';
  el.title = ok ? `Refreshes every ${POLL_MS / 1000} s while this tab is visible`
    : `Last refresh failed: ${errorMessage(error)}`;
}

/**
 * A modal confirmation; resolves true only when the operator pressed the action button.
 * @param {{ title: string, text: string, ok: string, danger?: boolean }} question
 * @returns {Promise<boolean>}
 */
export function confirmAction({ title, text, ok, danger = false }) {
  const dialog = $('#confirm', HTMLDialogElement);
  $('#confirm-title', HTMLElement).textContent = title;
  $('#confirm-text', HTMLElement).textContent = text;
  const okButton = $('#confirm-ok', HTMLButtonElement);
  okButton.textContent = ok;
  okButton.className = danger ? 'danger' : '';
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    $('#confirm-cancel', HTMLButtonElement).focus();
  });
}

/**
 * Runs an action the operator asked for, with its outcome as a toast; `button` is disabled
 * meanwhile.
 * @param {HTMLButtonElement | null} button
 * @param {() => Promise<unknown>} work
 */
export async function act(button, work) {
  if (button) button.disabled = true;
  try {
    await work();
  } catch (err) {
    toast(errorMessage(err), { error: true });
  } finally {
    if (button) button.disabled = false;
  }
}
