// @ts-check
// The API token: typed into the header's form, kept in this tab's sessionStorage (gone when
// the tab closes, never in a cookie), sent by api.js as `Authorization: Bearer`.

import { clearBanner, toast } from './chrome.js';
import { $ } from './dom.js';
import { refreshSoon } from './poll.js';

const TOKEN_KEY = 'wasmq.api-token';

/** The token set for this tab, or ''. */
export const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

/** Wires the header's token form: "Use" sets (or, empty, clears) it, "Forget" forgets it. */
export function setupToken() {
  const form = $('#token-form', HTMLFormElement);
  const input = $('#token', HTMLInputElement);
  const reflect = () => {
    form.classList.toggle('set', Boolean(token()));
    input.placeholder = token() ? 'set for this tab' : 'not set';
  };
  input.value = token();
  reflect();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    reflect();
    clearBanner();
    toast(value ? 'API token set for this tab' : 'API token cleared');
    refreshSoon();
  });
  $('#token-forget', HTMLButtonElement).addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    input.value = '';
    reflect();
    toast('API token forgotten');
  });
}
